"""MulT, Multimodal Transformer (Tsai et al., ACL 2019) as implemented in MMSA: MODELS.md 6.4.

Unaligned text/audio/vision sequences are projected by bias-free temporal convolutions, each
modality attends to the other two through crossmodal transformers, a self-attention "memory"
transformer per modality reads the concatenation, and the last time steps feed a residual MLP.
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
from .layers.classify import head_outputs, head_size, l1_or_class_loss
from .layers.transformer import TransformerEncoder

MODALITIES = ("l", "a", "v")
BATCH_KEY = {"l": "text", "a": "audio", "v": "vision"}


@dataclass(frozen=True)
class MulTConfig(Checked):
    """MMSA ``config_regression.json`` "mult" MOSI values."""

    dim: Size = 50
    heads: Size = 10
    nlevels: Size = 4
    conv_kernel_l: Size = 5
    conv_kernel_a: Size = 5
    conv_kernel_v: Size = 5
    attn_dropout: Dropout = 0.3  # al, vl and the memory transformers
    attn_dropout_a: Dropout = 0.2  # la, va
    attn_dropout_v: Dropout = 0.0  # lv, av
    relu_dropout: Dropout = 0.0
    embed_dropout: Dropout = 0.2
    res_dropout: Dropout = 0.0
    output_dropout: Dropout = 0.5
    text_dropout: Dropout = 0.5
    attn_mask: bool = True
    position_embedding: bool = False  # MMSA runs without positions (AQ); True adds fairseq sinusoids
    lr: Positive = 2e-3
    weight_decay: NonNegative = 0.0  # MMSA's config value is never passed to Adam (AQ): 0 reproduces it
    # clip_value 0.6; ReduceLROnPlateau on the validation loss (patience 5, factor 0.1)
    train: TrainSettings = TrainSettings(optimizer="adam", batch_size=16, update_every=8, clip_value=0.6,
                                         early_stop=8, max_epochs=40, scheduler="plateau:5:0.1")


class MulT(MSAModel):
    name: ClassVar[str] = "mult"
    Config = MulTConfig
    supports_classes: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosei": {"dim": 30, "heads": 6, "conv_kernel_a": 1, "conv_kernel_v": 3, "attn_dropout": 0.4,
                  "attn_dropout_a": 0.0, "embed_dropout": 0.0, "text_dropout": 0.3, "lr": 5e-4,
                  "train": {"batch_size": 4, "scheduler": "plateau:20:0.1"}},
        "sims": {"nlevels": 2, "conv_kernel_a": 1, "conv_kernel_v": 1, "attn_dropout": 0.2, "attn_dropout_a": 0.1,
                 "embed_dropout": 0.1, "res_dropout": 0.2, "output_dropout": 0.1, "text_dropout": 0.3,
                 "train": {"scheduler": "plateau:10:0.1"}},
        "simsv2": {"nlevels": 2, "conv_kernel_a": 1, "conv_kernel_v": 1, "attn_dropout": 0.2,
                   "attn_dropout_a": 0.1, "embed_dropout": 0.1, "res_dropout": 0.2, "output_dropout": 0.1,
                   "text_dropout": 0.3, "train": {"scheduler": "plateau:10:0.1"}},
        # MMSA's published runs (docs/reproduction.md): its selection rule on its own datasets
        "paper": {"train": {"select": "mmsa_loss"}},
        "paper:mosi": {},
        "paper:mosei": {},
        "paper:sims": {},
        "tiny": {"dim": 8, "heads": 2, "nlevels": 1, "conv_kernel_l": 3, "conv_kernel_a": 3, "conv_kernel_v": 3,
                 "attn_dropout": 0.0, "attn_dropout_a": 0.0, "embed_dropout": 0.0, "output_dropout": 0.0,
                 "text_dropout": 0.0, "lr": 5e-3, "train": {"batch_size": 8, "update_every": 1}},
    }

    @classmethod
    def legacy_config(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """Before ``train``: ``grad_clip`` was the clip value, ``patience`` the plateau scheduler's."""
        if "grad_clip" in saved:
            saved["clip_value"] = saved.pop("grad_clip")
        if "patience" in saved:
            saved["scheduler"] = f"plateau:{saved.pop('patience')}:0.1"
        return saved

    def __init__(self, config: MulTConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        d = c.dim
        in_dims = {"l": dims.text, "a": dims.audio, "v": dims.vision}
        self.kernels = {"l": c.conv_kernel_l, "a": c.conv_kernel_a, "v": c.conv_kernel_v}
        # MMSA skips the projection when a modality already has width d (no shrink then)
        self.proj = nn.ModuleDict({
            m: nn.Conv1d(in_dims[m], d, self.kernels[m], padding=0, bias=False)
            for m in MODALITIES if in_dims[m] != d
        })
        attn = {"la": c.attn_dropout_a, "va": c.attn_dropout_a, "lv": c.attn_dropout_v, "av": c.attn_dropout_v,
                "al": c.attn_dropout, "vl": c.attn_dropout}

        def encoder(width: int, layers: int, attn_dropout: float) -> TransformerEncoder:
            return TransformerEncoder(width, c.heads, layers, attn_dropout, c.relu_dropout, c.res_dropout,
                                      c.embed_dropout, c.attn_mask, c.position_embedding)

        # cross["la"]: queries l, keys/values a (MMSA trans_l_with_a)
        self.cross = nn.ModuleDict({pair: encoder(d, c.nlevels, p) for pair, p in attn.items()})
        self.mem = nn.ModuleDict({m: encoder(2 * d, max(c.nlevels, 3), c.attn_dropout) for m in MODALITIES})
        combined = 6 * d
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_layer = nn.Linear(combined, head_size(task))

    def project(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Conv-projected (B, L_m − k_m + 1, d) sequences (text dropout first, as MMSA)."""
        out = {}
        for m in MODALITIES:
            x = batch[BATCH_KEY[m]]
            if m == "l":
                x = F.dropout(x, self.config.text_dropout, self.training)
            if m in self.proj:
                if x.shape[1] < self.kernels[m]:
                    raise DataError(f"mult needs at least {self.kernels[m]} time steps of {BATCH_KEY[m]} "
                                    f"(conv kernel), got {x.shape[1]}; lower conv_kernel_{m}")
                x = self.proj[m](x.transpose(1, 2)).transpose(1, 2)
            out[m] = x
        return out

    def encode(self, batch: Batch, last_only: bool = True) -> dict[str, torch.Tensor]:
        """Per-modality memory-transformer outputs (B, L_m', 2d); only the last step with ``last_only``."""
        x = self.project(batch)
        out = {}
        for m in MODALITIES:
            others = [o for o in MODALITIES if o != m]
            h = torch.cat([self.cross[m + o](x[m], x[o]) for o in others], dim=-1)
            out[m] = self.mem[m](h, last_only=last_only)
        return out

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        hs = self.encode(batch, last_only=True)
        h = torch.cat([hs[m][:, -1] for m in MODALITIES], dim=-1)  # (B, 6d)
        h2 = self.proj2(F.dropout(F.relu(self.proj1(h)), self.config.output_dropout, self.training)) + h
        y = self.out_layer(h2)
        return head_outputs(y, self.task)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        return LossOut(l1_or_class_loss(out, batch, self.task))

    def param_groups(self) -> list[ParamGroup]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [ParamGroup("all", params, self.config.lr, self.config.weight_decay)]
