"""HSCL: hierarchical supervised contrastive learning (Chen & Wang, MMM 2024), MODELS.md §4.

Text through a BERT-family encoder, audio and vision through small Transformer encoders on their raw
feature widths with a prepended CLS, SupCR between text-audio and text-vision projections (plus an
L2 similarity term), two bimodal fusion blocks (text self-attention, cross-attention to audio/vision,
feed-forward) with their own SupCR, and an MLP on the mean of the two fused [CLS] rows.

Reference-code quirks ("AQ") are the defaults, each behind a flag: re-sampled random CLS vectors
(``cls_mode``), SupCR's positive-k denominator (``denominator``), the cross-attention residual on the
original text (``cross_residual``) and the unsquared similarity loss (``sim_squared``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from torch import nn

from msa.models.base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from msa.models.layers.attention import check_heads, sinusoidal_table
from msa.models.layers.supcr import DENOMINATORS, similarity_loss, supcr_loss
from msa.models.layers.text import TextEncoder
from msa.core.config import Checked, Count, Dropout, NonNegative, Positive, Size, one_of
from msa.core.errors import UsageError


@dataclass(frozen=True)
class HSCLConfig(Checked):
    text_encoder: str = "minilm"
    finetune_text: bool = True
    fusion_heads: Size = 12  # must divide the text encoder's width (768/12 for BERT, 384/12 for MiniLM)
    audio_heads: Count = 0  # 0 = the largest divisor of the raw audio width that is <= 5
    vision_heads: Count = 0
    audio_ffn: Size = 32
    vision_ffn: Size = 64
    unimodal_layers: Size = 3
    cls_mode: Annotated[str, one_of("resample_random", "learned")] = "resample_random"  # resample_random (reference) | learned
    audio_cls_std: NonNegative = 1.0
    vision_cls_std: NonNegative = 0.2
    cross_residual: Annotated[str, one_of("x0", "x1")] = "x0"  # x0 (reference: original text) | x1 (paper: self-attended text)
    dropout: Dropout = 0.1
    d_prjh: Size = 128
    dropout_prj: Dropout = 0.1
    tau: Positive = 0.5
    denominator: Annotated[str, one_of(*DENOMINATORS)] = "positive"  # positive (reference) | anchor (standard SupCR)
    sim_squared: bool = False  # False: reference unsquared L2; True: the paper's squared L2
    alpha: NonNegative = 0.1
    omega1: NonNegative = 0.01
    omega2: NonNegative = 0.1
    xavier_init: bool = True
    range_output: bool = True  # pred = centre + (high-low)/6 * MLP: the identity on MOSI's [-3, 3] (reference)
    lr_bert: Positive = 5e-5
    weight_decay_bert: NonNegative = 1e-4
    lr_main: Positive = 1e-3
    weight_decay_main: NonNegative = 1e-4
    # StepLR every 11 epochs (``when``), gamma 0.1; early stop after 10 epochs (``patience``)
    train: TrainSettings = TrainSettings(optimizer="adam", batch_size=128, clip_norm=1.0, early_stop=10,
                                         max_epochs=20, select="min:MAE", scheduler="step:11:0.1")


class UnimodalEncoder(nn.Module):
    """CLS + ``x*sqrt(d)`` + sinusoidal positions + dropout + post-LN Transformer on the raw width d."""

    def __init__(self, dim: int, heads: int, ffn: int, layers: int, dropout: float, cls_mode: str,
                 cls_std: float) -> None:
        super().__init__()
        check_heads(dim, heads, f"HSCL unimodal encoder (width {dim})")
        self.dim, self.cls_mode, self.cls_std = dim, cls_mode, cls_std
        self.cls = nn.Parameter(torch.randn(dim) * cls_std) if cls_mode == "learned" else None
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def cls_vector(self, x: torch.Tensor) -> torch.Tensor:
        if self.cls is not None:
            return self.cls.to(x.dtype)
        # AQ: a fresh non-learnable vector on every call, shared by the whole batch
        return torch.randn(self.dim, device=x.device, dtype=x.dtype) * self.cls_std

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, d), lengths (B,) -> outputs (B, L+1, d) and the padding mask (B, L+1), True = pad."""
        b, length, _ = x.shape
        x = torch.cat([self.cls_vector(x).expand(b, 1, self.dim), x], dim=1)
        mask = torch.arange(length + 1, device=x.device)[None, :] >= (lengths.to(x.device)[:, None] + 1)
        pe = sinusoidal_table(length + 1, self.dim).to(device=x.device, dtype=x.dtype)
        x = self.drop(x * math.sqrt(self.dim) + pe)
        return self.encoder(x, src_key_padding_mask=mask), mask


class FusionBlock(nn.Module):
    """Text self-attention (no text padding mask), cross-attention to a/v (masked), then FFN (§4.2)."""

    def __init__(self, width: int, kv_dim: int, heads: int, dropout: float, residual: str) -> None:
        super().__init__()
        check_heads(width, heads, "HSCL fusion block")
        self.residual = residual
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, kdim=kv_dim, vdim=kv_dim, batch_first=True)
        self.ln = nn.ModuleList([nn.LayerNorm(width) for _ in range(3)])
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, text: torch.Tensor, other: torch.Tensor, other_mask: torch.Tensor) -> torch.Tensor:
        x0 = text
        x1 = self.ln[0](x0 + self.drop(self.self_attn(x0, x0, x0, need_weights=False)[0]))
        cross = self.cross_attn(x1, other, other, key_padding_mask=other_mask, need_weights=False)[0]
        x2 = self.ln[1]((x0 if self.residual == "x0" else x1) + self.drop(cross))
        return self.ln[2](x2 + self.drop(self.fc2(self.drop(torch.relu(self.fc1(x2))))))


def _projection(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, d_out), nn.ReLU())


def _auto_heads(dim: int, heads: int) -> int:
    return heads if heads > 0 else max(h for h in range(1, 6) if dim % h == 0)


class HSCL(MSAModel):
    """Regression model: ``out["pred"]`` (B,) plus the five projections used by the contrastive terms."""

    name: ClassVar[str] = "hscl"
    uses_bert_ids: ClassVar[bool] = True
    Config = HSCLConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosi": {"audio_heads": 1},  # the reference MOSI setting (1 audio head; vision heads follow the width)
        "mosei": {"train": {"scheduler": "step:5:0.1"}, "omega2": 0.05, "lr_main": 1e-4, "lr_bert": 1e-5, "vision_ffn": 32},
        "sims": {},
        "phq8": {"train": {"batch_size": 32}},  # regression on [0, 24]; selection on validation MAE
        # the published runs (HSCL README; docs/reproduction.md)
        "paper:mosi": {"text_encoder": "bert-base-uncased"},
        "paper:mosei": {"text_encoder": "bert-base-uncased"},
        "tiny": {"text_encoder": "tiny-random", "fusion_heads": 4, "unimodal_layers": 1, "audio_ffn": 16,
                 "vision_ffn": 16, "d_prjh": 16, "train": {"batch_size": 16, "max_epochs": 2}},
    }

    @classmethod
    def legacy_config(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """Before ``train``: StepLR was ``when``/``lr_gamma`` and early stopping ``patience``."""
        if "when" in saved or "lr_gamma" in saved:
            saved["scheduler"] = f"step:{saved.pop('when', 11)}:{saved.pop('lr_gamma', 0.1)}"
        if "patience" in saved:
            saved["early_stop"] = saved.pop("patience")
        return saved

    def __init__(self, config: HSCLConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        if task.n_classes:
            raise UsageError("hscl is a regression model; use a regression task (n_classes = 0)")
        self.text = TextEncoder(c.text_encoder, finetune=c.finetune_text)
        width = self.text.hidden_size
        check_heads(width, c.fusion_heads, f"hscl fusion (text width {width})")
        enc = dict(layers=c.unimodal_layers, dropout=c.dropout, cls_mode=c.cls_mode)
        self.audio = UnimodalEncoder(dims.audio, _auto_heads(dims.audio, c.audio_heads), c.audio_ffn,
                                     cls_std=c.audio_cls_std, **enc)
        self.vision = UnimodalEncoder(dims.vision, _auto_heads(dims.vision, c.vision_heads), c.vision_ffn,
                                      cls_std=c.vision_cls_std, **enc)
        self.fuse_a = FusionBlock(width, dims.audio, c.fusion_heads, c.dropout, c.cross_residual)
        self.fuse_v = FusionBlock(width, dims.vision, c.fusion_heads, c.dropout, c.cross_residual)
        self.proj = nn.ModuleDict({
            "t": _projection(width, c.d_prjh, c.dropout_prj), "a": _projection(dims.audio, c.d_prjh, c.dropout_prj),
            "v": _projection(dims.vision, c.d_prjh, c.dropout_prj), "at": _projection(width, c.d_prjh, c.dropout_prj),
            "vt": _projection(width, c.d_prjh, c.dropout_prj),
        })
        self.head = nn.Sequential(nn.Dropout(c.dropout_prj), nn.Linear(width, c.d_prjh), nn.Tanh(),
                                  nn.Linear(c.d_prjh, c.d_prjh), nn.Tanh(), nn.Linear(c.d_prjh, 1))
        scale = (task.high - task.low) / 6.0 if c.range_output else 1.0
        self.register_buffer("out_affine", torch.tensor([(task.high + task.low) / 2.0 if c.range_output else 0.0, scale]),
                             persistent=False)
        if c.xavier_init:
            for name, p in self.named_parameters():
                if not name.startswith("text.") and p.dim() >= 2:
                    nn.init.xavier_normal_(p)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        e_t = self.text(batch["text_bert"])
        e_a, m_a = self.audio(batch["audio"], batch["audio_lengths"])
        e_v, m_v = self.vision(batch["vision"], batch["vision_lengths"])
        r_at = self.fuse_a(e_t, e_a, m_a)[:, 0]
        r_vt = self.fuse_v(e_t, e_v, m_v)[:, 0]
        fused = 0.5 * (r_at + r_vt)  # the paper's "1/2 (R_at + R_vt)": a mean, not a concatenation
        pred = self.out_affine[0] + self.out_affine[1] * self.head(fused).squeeze(-1)
        return {
            "pred": pred, "fused": fused,
            "z_t": self.proj["t"](e_t[:, 0]), "z_a": self.proj["a"](e_a[:, 0]), "z_v": self.proj["v"](e_v[:, 0]),
            "z_at": self.proj["at"](r_at), "z_vt": self.proj["vt"](r_vt),
        }

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        c = self.config
        y = batch["labels"].to(out["pred"].dtype).view(-1)
        task = (out["pred"] - y).abs().mean()

        def supcr(v0: str, v1: str) -> torch.Tensor:
            return supcr_loss(out[v0], out[v1], y, c.tau, c.denominator)

        sup_ta, sup_tv, sup_f = supcr("z_t", "z_a"), supcr("z_t", "z_v"), supcr("z_at", "z_vt")
        sim_ta = similarity_loss(out["z_t"], out["z_a"], c.sim_squared)
        sim_tv = similarity_loss(out["z_t"], out["z_v"], c.sim_squared)
        l_ta, l_tv = sup_ta + c.alpha * sim_ta, sup_tv + c.alpha * sim_tv
        total = task + c.omega1 * (l_ta + l_tv) + c.omega2 * sup_f
        logs = {"task": task, "supcr_ta": sup_ta, "supcr_tv": sup_tv, "supcr_fusion": sup_f,
                "sim_ta": sim_ta, "sim_tv": sim_tv}
        return LossOut(total, {k: float(v.detach()) for k, v in logs.items()})

    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        text = [p for p in self.text.parameters() if p.requires_grad]
        main = [p for n, p in self.named_parameters() if not n.startswith("text.")]
        groups = [ParamGroup("main", main, c.lr_main, c.weight_decay_main)]
        if text:
            groups.insert(0, ParamGroup("text_encoder", text, c.lr_bert, c.weight_decay_bert))
        return groups
