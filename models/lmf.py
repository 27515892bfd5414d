"""LMF, Low-rank Multimodal Fusion (Liu et al., ACL 2018) as implemented in MMSA: MODELS.md 6.3.

Subnets as in TFN (text_out = h_t // 2); the TFN weight tensor is replaced by rank-R modality factors,
so the outer product is never formed: ŷ = Σ_r w_r · Π_m ([1; h_m] W_m^r) + b.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from torch import nn

from msa.core.config import Checked, Dropout, NonNegative, Positive, Size, one_of

from .base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from .layers.classify import head_outputs, head_size, l1_or_class_loss
from .layers.seq import SubNet, TextSubNet
from .tfn import augment, average_inputs


@dataclass(frozen=True)
class LMFConfig(Checked):
    """MMSA ``config_regression.json`` "lmf" MOSI values."""

    hidden_text: Size = 128
    hidden_audio: Size = 16
    hidden_video: Size = 128
    rank: Size = 3
    dropout_audio: Dropout = 0.3
    dropout_video: Dropout = 0.3
    dropout_text: Dropout = 0.3
    dropout_post: Dropout = 0.3  # defined by MMSA but unused there; kept for config compatibility
    text_dropout_inert: bool = True  # MMSA: the 1-layer text LSTM forces its dropout to 0 (AQ)
    average: Annotated[str, one_of("padded", "true")] = "padded"  # padded (MMSA, padding counts) | true (mean over true lengths)
    optimise_fusion: bool = False  # MMSA never optimises fusion_weights / fusion_bias (AQ)
    lr: Positive = 1e-3
    factor_lr: Positive = 1e-3
    weight_decay: NonNegative = 5e-3
    train: TrainSettings = TrainSettings(optimizer="adam", batch_size=64, early_stop=8, max_epochs=40)


class LMF(MSAModel):
    name: ClassVar[str] = "lmf"
    Config = LMFConfig
    supports_classes: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosei": {"dropout_audio": 0.2, "dropout_video": 0.2, "dropout_text": 0.2, "dropout_post": 0.2,
                  "rank": 4, "weight_decay": 1e-3, "train": {"batch_size": 32}},
        "sims": {"hidden_text": 64, "hidden_video": 64, "dropout_audio": 0.2, "dropout_video": 0.2,
                 "dropout_text": 0.2, "dropout_post": 0.2, "rank": 4, "lr": 2e-3, "factor_lr": 5e-4},
        "simsv2": {"hidden_text": 64, "hidden_video": 64, "dropout_audio": 0.2, "dropout_video": 0.2,
                   "dropout_text": 0.2, "dropout_post": 0.2, "rank": 4, "lr": 2e-3, "factor_lr": 5e-4},
        # MMSA's published runs (docs/reproduction.md): its selection rule on its own datasets
        "paper": {"train": {"select": "mmsa_loss"}},
        "paper:mosi": {},
        "paper:mosei": {},
        "paper:sims": {},
        "tiny": {"hidden_text": 8, "hidden_audio": 4, "hidden_video": 4, "rank": 2, "dropout_audio": 0.0,
                 "dropout_video": 0.0, "dropout_text": 0.0, "dropout_post": 0.0,
                 "lr": 1e-2, "factor_lr": 1e-2, "weight_decay": 0.0, "train": {"batch_size": 8}},
    }

    def __init__(self, config: LMFConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        self.text_out = c.hidden_text // 2
        self.audio_subnet = SubNet(dims.audio, c.hidden_audio, c.dropout_audio)
        self.video_subnet = SubNet(dims.vision, c.hidden_video, c.dropout_video)
        self.text_subnet = TextSubNet(dims.text, c.hidden_text, self.text_out, c.dropout_text, c.text_dropout_inert)
        out = head_size(task)  # 1, or one logit per class
        self.audio_factor = nn.Parameter(torch.empty(c.rank, c.hidden_audio + 1, out))
        self.video_factor = nn.Parameter(torch.empty(c.rank, c.hidden_video + 1, out))
        self.text_factor = nn.Parameter(torch.empty(c.rank, self.text_out + 1, out))
        self.fusion_weights = nn.Parameter(torch.empty(1, c.rank), requires_grad=c.optimise_fusion)
        self.fusion_bias = nn.Parameter(torch.zeros(1, out), requires_grad=c.optimise_fusion)
        for p in (self.audio_factor, self.video_factor, self.text_factor, self.fusion_weights):
            nn.init.xavier_normal_(p)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        audio, vision = average_inputs(batch, self.dims, self.config.average)
        a = augment(self.audio_subnet(audio))
        v = augment(self.video_subnet(vision))
        t = augment(self.text_subnet(batch["text"]))
        # (B, d+1) @ (R, d+1, o) -> (R, B, o); the product over modalities, then a weighted sum over R
        fused = torch.matmul(a, self.audio_factor) * torch.matmul(v, self.video_factor)
        fused = fused * torch.matmul(t, self.text_factor)
        pred = torch.einsum("r,rbo->bo", self.fusion_weights[0], fused) + self.fusion_bias
        return head_outputs(pred, self.task)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        return LossOut(l1_or_class_loss(out, batch, self.task))

    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        subnets = [p for m in (self.audio_subnet, self.video_subnet, self.text_subnet) for p in m.parameters()]
        groups = [
            ParamGroup("subnets", subnets, c.lr, c.weight_decay),
            ParamGroup("factors", [self.audio_factor, self.video_factor, self.text_factor], c.factor_lr,
                       c.weight_decay),
        ]
        if c.optimise_fusion:
            groups.append(ParamGroup("fusion", [self.fusion_weights, self.fusion_bias], c.factor_lr, c.weight_decay))
        return groups
