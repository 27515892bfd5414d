"""Self-MM (Yu et al., AAAI 2021) as implemented in MMSA: MODELS.md section 1.

A BERT-family [CLS] text vector, packed-LSTM audio/vision subnets, a fusion head and three unimodal
heads. The unimodal heads learn from labels generated on the fly by ULGM (``layers/ulgm.py``),
driven by the trainer hooks ``on_train_start`` (label banks) and ``after_backward`` (update schedule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msa.core.config import Checked, Dropout, NonNegative, Positive, Size
from msa.core.errors import DataError

from .base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from .layers.seq import AuViSubNet
from .layers.text import TextEncoder
from .layers.ulgm import BRANCHES, ULGM

NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")


@dataclass(frozen=True)
class SelfMMConfig(Checked):
    """MMSA ``config_regression.json`` "self_mm" MOSI values; other datasets are presets."""

    text_encoder: str = "minilm"  # MMSA: bert-base-uncased (not shipped offline; same vocabulary as MiniLM)
    finetune: bool = True
    trim_text: bool = True  # drop all-padding token columns before BERT (exact: padding is masked out)
    a_lstm_hidden: Size = 16
    v_lstm_hidden: Size = 32
    a_lstm_layers: Size = 1
    v_lstm_layers: Size = 1
    a_lstm_dropout: Dropout = 0.0
    v_lstm_dropout: Dropout = 0.0
    audio_out: Size = 16
    video_out: Size = 32
    post_fusion_dim: Size = 128
    post_text_dim: Size = 32
    post_audio_dim: Size = 16
    post_video_dim: Size = 32
    post_fusion_dropout: Dropout = 0.0
    post_text_dropout: Dropout = 0.1
    post_audio_dropout: Dropout = 0.1
    post_video_dropout: Dropout = 0.0
    lr_bert: Positive = 5e-5
    lr_audio: Positive = 5e-3
    lr_video: Positive = 5e-3
    lr_other: Positive = 1e-3
    wd_bert: NonNegative = 1e-3
    wd_audio: NonNegative = 1e-3
    wd_video: NonNegative = 1e-3
    wd_other: NonNegative = 1e-3
    H: Positive | None = None  # u-label clamp [c-H, c+H]; None: the task's label range (MOSI 3, SIMS 1)
    ulgm_centre: float | None = None  # label centre c for ULGM signs; None: midpoint of the task range
    exclude_zero: bool = True  # MMSA: positive centre uses y > 0; False: y >= 0 (original Self-MM repo)
    train: TrainSettings = TrainSettings(optimizer="adam", batch_size=16, update_every=4, early_stop=8, max_epochs=40)


class _Head(nn.Module):
    """F = ReLU(W1·Dropout(x)), G = ReLU(W2·F), ŷ = W3·G (MODELS.md 1.3); returns (F, ŷ)."""

    def __init__(self, in_dim: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.layer_1 = nn.Linear(in_dim, dim)
        self.layer_2 = nn.Linear(dim, dim)
        self.layer_3 = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = F.relu(self.layer_1(self.drop(x)))
        return feat, self.layer_3(F.relu(self.layer_2(feat))).squeeze(-1)


def trim_bert_padding(text_bert: torch.Tensor) -> torch.Tensor:
    """Drop the trailing token columns that are padding in every row of (B, 3, L) ids.

    BERT masks padded keys, so the remaining positions (and [CLS]) are unchanged; shorter batches
    are much cheaper to fine-tune.
    """
    used = text_bert[:, 1].ne(0).any(dim=0).nonzero()
    keep = int(used.max()) + 1 if used.numel() else 1
    return text_bert[:, :, :keep] if keep < text_bert.shape[-1] else text_bert


class SelfMM(MSAModel):
    name: ClassVar[str] = "self_mm"
    uses_bert_ids: ClassVar[bool] = True
    Config = SelfMMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosei": {"train": {"batch_size": 32}, "lr_video": 1e-4, "wd_audio": 0.0, "wd_video": 0.0, "wd_other": 1e-2,
                  "post_fusion_dropout": 0.1, "post_text_dropout": 0.0, "post_audio_dropout": 0.0},
        "sims": {"train": {"batch_size": 32}, "wd_audio": 1e-2, "wd_video": 1e-2, "v_lstm_hidden": 64,
                 "post_text_dim": 64},
        "simsv2": {"train": {"batch_size": 32}, "wd_audio": 1e-2, "wd_video": 1e-2, "v_lstm_hidden": 64,
                   "post_text_dim": 64},
        # MMSA's published runs (docs/reproduction.md): its encoder and its selection rule
        "paper": {"train": {"select": "mmsa_loss"}},
        "paper:mosi": {"text_encoder": "bert-base-uncased"},
        "paper:mosei": {"text_encoder": "bert-base-uncased"},
        "paper:sims": {"text_encoder": "bert-base-chinese"},
        "paper:simsv2": {"text_encoder": "bert-base-chinese"},
        # PHQ-8 [0, 24]: signs of u-labels are taken around the clinical cut-off 10 (see docs)
        "phq8": {"ulgm_centre": 10.0},
        "tiny": {"text_encoder": "tiny-random", "a_lstm_hidden": 8, "v_lstm_hidden": 8, "audio_out": 8,
                 "video_out": 8, "post_fusion_dim": 32, "post_text_dim": 8, "post_audio_dim": 4,
                 "post_video_dim": 4, "post_fusion_dropout": 0.0, "post_text_dropout": 0.0,
                 "post_audio_dropout": 0.0, "post_video_dropout": 0.0, "lr_bert": 1e-3, "lr_audio": 1e-2,
                 "lr_video": 1e-2, "lr_other": 1e-2, "train": {"batch_size": 8, "update_every": 1}},
    }

    def __init__(self, config: SelfMMConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        self.text_model = TextEncoder(c.text_encoder, finetune=c.finetune)
        d_t = self.text_model.hidden_size
        self.audio_model = AuViSubNet(dims.audio, c.a_lstm_hidden, c.audio_out, c.a_lstm_layers, c.a_lstm_dropout)
        self.video_model = AuViSubNet(dims.vision, c.v_lstm_hidden, c.video_out, c.v_lstm_layers, c.v_lstm_dropout)
        self.heads = nn.ModuleDict({
            "f": _Head(d_t + c.audio_out + c.video_out, c.post_fusion_dim, c.post_fusion_dropout),
            "t": _Head(d_t, c.post_text_dim, c.post_text_dropout),
            "a": _Head(c.audio_out, c.post_audio_dim, c.post_audio_dropout),
            "v": _Head(c.video_out, c.post_video_dim, c.post_video_dropout),
        })
        centre = (task.low + task.high) / 2 if c.ulgm_centre is None else c.ulgm_centre
        low, high = (task.low, task.high) if c.H is None else (centre - c.H, centre + c.H)
        feature_dims = {"f": c.post_fusion_dim, "t": c.post_text_dim, "a": c.post_audio_dim, "v": c.post_video_dim}
        self.ulgm = ULGM(feature_dims, low, high, centre, c.exclude_zero)
        if dims.n_train:
            self.ulgm.reset(dims.n_train)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        ids = batch["text_bert"]
        if self.config.trim_text:
            ids = trim_bert_padding(ids)
        x = {
            "t": self.text_model(ids)[:, 0],
            "a": self.audio_model(batch["audio"], batch.get("audio_lengths")),
            "v": self.video_model(batch["vision"], batch.get("vision_lengths")),
        }
        x["f"] = torch.cat([x["t"], x["a"], x["v"]], dim=-1)
        out: dict[str, torch.Tensor] = {}
        for b in BRANCHES:
            out[f"feat_{b}"], out[f"pred_{b}"] = self.heads[b](x[b])
        out["pred"] = out["pred_f"]
        return out

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        """Training: Σ_b mean(w_b·|ŷ_b − Y_b|) with ULGM labels; evaluation: MAE of the fusion head."""
        y = batch["labels"].reshape(-1).to(out["pred"].dtype)
        if not self.training:
            return LossOut((out["pred"] - y).abs().mean())
        if "index" not in batch:
            raise DataError("self_mm needs batch['index'] (each sample's position in the train split) to train")
        index = batch["index"]
        self.ulgm.ensure(index, y)
        targets, weights = self.ulgm.targets(index), self.ulgm.weights(index)
        parts = [(out["pred_f"] - targets["f"]).abs().mean()]
        for s in ("t", "a", "v"):
            parts.append((weights[s] * (out[f"pred_{s}"] - targets[s]).abs()).mean())
        stacked = torch.stack(parts)
        logs = dict(zip(("loss_m", "loss_t", "loss_a", "loss_v"), stacked.detach().tolist()))
        return LossOut(stacked.sum(), logs)

    # ULGM hooks -------------------------------------------------------------------------------
    def on_train_start(self, loader: Any) -> None:
        """Fill the label banks from one pass over the training labels (no forward pass)."""
        indices, labels = [], []
        for batch in loader:
            if "index" not in batch:
                raise DataError("self_mm needs batch['index'] (each sample's position in the train split) to train")
            indices.append(batch["index"].reshape(-1))
            labels.append(batch["labels"].reshape(-1))
        index = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
        n = max(self.dims.n_train, int(index.max()) + 1 if index.numel() else 0)
        self.ulgm.reset(n)
        if index.numel():
            self.ulgm.fill(index, torch.cat(labels))
            self.ulgm.update_centres()

    def after_backward(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int) -> None:
        """ULGM steps 4 to 7 (``epoch`` is 1-based): u-label update from epoch 2, bank write, centres."""
        if self.training:
            self.ulgm.step({b: out[f"feat_{b}"] for b in BRANCHES}, batch["index"], epoch)

    # optimisation -----------------------------------------------------------------------------
    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        bert = [(n, p) for n, p in self.text_model.named_parameters() if p.requires_grad]
        groups = [
            ParamGroup("bert", [p for n, p in bert if not any(k in n for k in NO_DECAY)], c.lr_bert, c.wd_bert),
            ParamGroup("bert_no_decay", [p for n, p in bert if any(k in n for k in NO_DECAY)], c.lr_bert, 0.0),
            ParamGroup("audio", [p for p in self.audio_model.parameters() if p.requires_grad], c.lr_audio, c.wd_audio),
            ParamGroup("video", [p for p in self.video_model.parameters() if p.requires_grad], c.lr_video, c.wd_video),
        ]
        taken = {id(p) for g in groups for p in g.params} | {id(p) for p in self.text_model.parameters()}
        other = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        groups.append(ParamGroup("other", other, c.lr_other, c.wd_other))
        return [g for g in groups if g.params]
