"""Bilingual text model: the fine-tuned MiniLM regressor for Latin-script text, an e5 head for the rest.

Input: the ``e5_minilm`` extractor's rows (e5 sentence vector + Latin-script flag; row 0 is read) and
MiniLM's ``text_bert`` ids. ``route="script"`` (the bundle's setting) sends each row by its flag:
Latin script to ``english`` (a :class:`TextRegressor`, the English default bundle's architecture
and weights), anything else (Chinese, ...) to ``other``, a small MLP on the frozen multilingual e5
vector. Both give scores on the same task range.

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

from msa.core.config import Checked, Dropout, NonNegative, Positive, Size, one_of
from msa.core.errors import UsageError

from .base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from .layers.text import MINILM
from .text_regressor import TextRegressor, TextRegressorConfig

ROUTES = ("script", "e5", "minilm")


@dataclass(frozen=True)
class BilingualTextConfig(Checked):
    route: Annotated[str, one_of(*ROUTES)] = "script"  # script: by the Latin flag | e5: all rows to the e5 head | minilm
    hidden: Size = 256  # e5 head: dropout + linear + GELU + dropout + linear
    dropout: Dropout = 0.2
    margin: Positive = 1.0  # sign-only rows must score at least this far on the right side of 0
    margin_weight: NonNegative = 1.0  # weight of the hinge term against the L1 term
    lr_head: Positive = 1e-3
    weight_decay: NonNegative = 0.01
    text_encoder: str = MINILM  # the English path (TextRegressor) settings of the default bundle
    max_tokens: Size = 128
    store_dtype: str = "float16"
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

    def __init__(self, config: BilingualTextConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        if dims.text < 2:
            raise UsageError(f"bilingual_text: text rows must be a sentence vector + a Latin-script flag (the "
                             f"e5_minilm extractor, 385-d), got {dims.text}-d")
        self.vector_dim = dims.text - 1
        en_cfg = TextRegressorConfig(text_encoder=c.text_encoder, train_layers=6 if c.text_encoder == MINILM else 1,
                                     max_tokens=c.max_tokens, store_dtype=c.store_dtype, cache_frozen=False)
        self.english = TextRegressor(en_cfg, dims, task)
        self.other = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(self.vector_dim, c.hidden), nn.GELU(),
                                   nn.Dropout(c.dropout), nn.Linear(c.hidden, 1))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        row = batch["text"][:, 0]
        latin = row[:, -1] > 0.5
        e5_raw = self.other(row[:, : self.vector_dim]).squeeze(-1)
        route = self.config.route
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
        return [ParamGroup("e5_head", list(self.other.parameters()), self.config.lr_head, self.config.weight_decay)]
