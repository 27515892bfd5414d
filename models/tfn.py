"""TFN, Tensor Fusion Network (Zadeh et al., EMNLP 2017) as implemented in MMSA: MODELS.md 6.1, 6.2.

Text features (B, L, d_t) go through an LSTM subnet; audio and vision are averaged over time
(MMSA ``need_normalized``, done here so the loader never rewrites data) and go through MLP subnets.
The 1-augmented vectors are fused by a 3-way outer product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from torch import nn

from msa.core.config import Checked, Dropout, NonNegative, Positive, Size, one_of
from msa.core.errors import UsageError

from .base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from .layers.classify import class_outputs, head_size, l1_or_class_loss
from .layers.ops import dropout
from .layers.seq import SubNet, TextSubNet, time_average

FIXED_LOW, FIXED_HIGH = -3.0, 3.0


def augment(x: torch.Tensor) -> torch.Tensor:
    """Prepend a constant 1: (B, d) -> (B, 1 + d)."""
    return torch.cat([x.new_ones(x.shape[0], 1), x], dim=1)


def fusion_tensor(a: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """vec([1;a] ⊗ [1;v] ⊗ [1;t]) with index ((i_a·(h_v+1)) + i_v)·(t_out+1) + i_t."""
    a1, v1, t1 = augment(a), augment(v), augment(t)
    b = a.shape[0]
    av = torch.bmm(a1.unsqueeze(2), v1.unsqueeze(1)).reshape(b, -1, 1)  # batched matmuls: no big temporaries
    return torch.bmm(av, t1.unsqueeze(1)).reshape(b, -1)


def average_inputs(batch: Batch, dims: Dims, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio and vision averaged over time (``mode`` "padded" = MMSA, "true" = over true lengths)."""
    audio = time_average(batch["audio"], batch.get("audio_lengths"), dims.audio_len, mode)
    vision = time_average(batch["vision"], batch.get("vision_lengths"), dims.vision_len, mode)
    return audio, vision


@dataclass(frozen=True)
class TFNConfig(Checked):
    """MMSA ``config_regression.json`` "tfn" MOSI values."""

    hidden_text: Size = 128
    hidden_audio: Size = 32
    hidden_video: Size = 128
    text_out: Size = 32
    post_fusion_dim: Size = 64
    dropout_audio: Dropout = 0.3
    dropout_video: Dropout = 0.3
    dropout_text: Dropout = 0.3
    dropout_post: Dropout = 0.5
    text_dropout_inert: bool = True  # MMSA: the 1-layer text LSTM forces its dropout to 0 (AQ)
    average: Annotated[str, one_of("padded", "true")] = "padded"  # padded (MMSA, padding counts) | true (mean over true lengths)
    output_range: Annotated[str, one_of("fixed", "task")] = "fixed"  # fixed: 6σ−3 as MMSA on every dataset (AQ) | task: the task's label range
    lr: Positive = 1e-3
    weight_decay: NonNegative = 0.0
    train: TrainSettings = TrainSettings(optimizer="adam", batch_size=32, early_stop=8, max_epochs=40)


class TFN(MSAModel):
    name: ClassVar[str] = "tfn"
    Config = TFNConfig
    supports_classes: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosei": {"hidden_audio": 16, "text_out": 128, "post_fusion_dim": 16, "dropout_audio": 0.4,
                  "dropout_video": 0.4, "dropout_text": 0.4, "dropout_post": 0.4, "lr": 5e-3,
                  "train": {"batch_size": 128}},
        "sims": {"text_out": 256, "post_fusion_dim": 32, "dropout_audio": 0.4, "dropout_video": 0.4,
                 "dropout_text": 0.4, "dropout_post": 0.4, "lr": 5e-4},
        "simsv2": {"text_out": 256, "post_fusion_dim": 32, "dropout_audio": 0.4, "dropout_video": 0.4,
                   "dropout_text": 0.4, "dropout_post": 0.4, "lr": 5e-4},
        "phq8": {"output_range": "task"},
        # MMSA's published runs (docs/reproduction.md): its selection rule on its own datasets
        "paper": {"train": {"select": "mmsa_loss"}},
        "paper:mosi": {},
        "paper:mosei": {},
        "paper:sims": {},
        "tiny": {"hidden_text": 8, "hidden_audio": 4, "hidden_video": 4, "text_out": 4, "post_fusion_dim": 8,
                 "dropout_audio": 0.0, "dropout_video": 0.0, "dropout_text": 0.0, "dropout_post": 0.0,
                 "lr": 1e-2, "train": {"batch_size": 8}},
    }

    def __init__(self, config: TFNConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        if task.is_classes:  # one logit per class; the output range does not apply
            self.out_low, self.out_high = 0.0, 0.0
        elif c.output_range == "fixed":
            if task.low < FIXED_LOW or task.high > FIXED_HIGH:
                raise UsageError(f"tfn's fixed output range (-3, 3) cannot reach the {task.name} labels "
                                 f"[{task.low:g}, {task.high:g}]; set output_range='task'")
            self.out_low, self.out_high = FIXED_LOW, FIXED_HIGH
        else:  # "task"
            self.out_low, self.out_high = float(task.low), float(task.high)
        self.audio_subnet = SubNet(dims.audio, c.hidden_audio, c.dropout_audio)
        self.video_subnet = SubNet(dims.vision, c.hidden_video, c.dropout_video)
        self.text_subnet = TextSubNet(dims.text, c.hidden_text, c.text_out, c.dropout_text, c.text_dropout_inert)
        self.fusion_size = (c.hidden_audio + 1) * (c.hidden_video + 1) * (c.text_out + 1)
        self.post_fusion = nn.Sequential(  # preceded by dropout(p_post) on the fusion tensor
            nn.Linear(self.fusion_size, c.post_fusion_dim), nn.ReLU(),
            nn.Linear(c.post_fusion_dim, c.post_fusion_dim), nn.ReLU(),
            nn.Linear(c.post_fusion_dim, head_size(task)),
        )

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        audio, vision = average_inputs(batch, self.dims, self.config.average)
        a = self.audio_subnet(audio)
        v = self.video_subnet(vision)
        t = self.text_subnet(batch["text"])
        z = dropout(fusion_tensor(a, v, t), self.config.dropout_post, self.training)
        if self.task.is_classes:
            return class_outputs(self.post_fusion(z))
        raw = self.post_fusion(z).squeeze(-1)
        return {"pred": torch.sigmoid(raw) * (self.out_high - self.out_low) + self.out_low}

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        return LossOut(l1_or_class_loss(out, batch, self.task))

    def param_groups(self) -> list[ParamGroup]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [ParamGroup("all", params, self.config.lr, self.config.weight_decay)]
