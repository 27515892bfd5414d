"""Pooled MLP: each present modality pooled over time, concatenated, then a small MLP (or a linear head).

The baseline for per-clip feature vectors (e.g. eGeMAPS functionals, pooled encoder states) and for
short sequences: audio and vision are pooled over their true lengths, text over its non-padding tokens
(rows that are not all zero). A modality of width 0 (absent from the features file) is skipped, so an
audio-only file trains an audio-only model. Classification (``Task.classes``) gives one logit per class;
regression a single value trained with L1, as the other baselines.

``members`` > 1 makes the model a small ensemble: that many MLPs, initialised independently, trained side
by side on the same batches (the loss is the sum of the members' own losses, so each member gets exactly
the gradient it would get alone), and averaged at the output (class probabilities, or regression values).
The first member keeps the single model's parameter names (``mlp``, ``head``), so a one-member bundle
loads unchanged. ``store_dtype`` rounds the stored weights (``float16``: half the bundle size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from torch import nn

from msa.core.config import Checked, Count, Dropout, NonNegative, Positive, Size, one_of
from msa.core.errors import DataError

from .base import STORE_DTYPES, Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings, store_as
from .layers.classify import class_outputs, head_outputs, head_size, l1_or_class_loss
from .layers.seq import clean_lengths

BATCH_LENGTHS = {"audio": "audio_lengths", "vision": "vision_lengths"}


@dataclass(frozen=True)
class PooledMLPConfig(Checked):
    pooling: Annotated[str, one_of("mean", "mean_std")] = "mean_std"  # mean_std: mean and std over time
    hidden: Size = 256
    layers: Count = 1  # hidden layers; 0 = a linear head on the pooled features
    dropout: Dropout = 0.3
    lr: Positive = 1e-3
    weight_decay: NonNegative = 1e-4
    members: Size = 1  # independently initialised MLPs trained together, outputs averaged (an ensemble)
    store_dtype: Annotated[str, one_of(*STORE_DTYPES)] = "float32"  # precision of the weights in state_dict
    # select auto: the best validation UAR for class-label tasks, else the validation loss
    train: TrainSettings = TrainSettings(optimizer="adamw", batch_size=32, early_stop=10, max_epochs=100,
                                         select="auto")


def masked_pool(x: torch.Tensor, keep: torch.Tensor, with_std: bool) -> torch.Tensor:
    """Mean (and std) of (B, T, D) over the frames where ``keep`` (B, T) is true; (B, D) or (B, 2D)."""
    w = keep.to(x.dtype)[..., None]
    n = w.sum(dim=1).clamp_min(1.0)
    mean = (x * w).sum(dim=1) / n
    if not with_std:
        return mean
    var = (((x - mean[:, None]) ** 2) * w).sum(dim=1) / n
    return torch.cat([mean, var.clamp_min(0).sqrt()], dim=-1)


class PooledMLP(MSAModel):
    name: ClassVar[str] = "pooled_mlp"
    Config = PooledMLPConfig
    supports_classes: ClassVar[bool] = True
    required_modalities: ClassVar[tuple[str, ...]] = ()  # any non-empty subset of text/audio/vision
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"hidden": 8, "dropout": 0.0, "lr": 1e-2, "train": {"batch_size": 8}},
    }

    def __init__(self, config: PooledMLPConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        widths = {"text": dims.text, "audio": dims.audio, "vision": dims.vision}
        self.modalities = tuple(m for m, d in widths.items() if d > 0)  # recorded in the bundle
        if not self.modalities:
            raise DataError("pooled_mlp: every modality has width 0; nothing to learn from")
        width = sum(widths[m] for m in self.modalities) * (2 if c.pooling == "mean_std" else 1)
        self.mlp, self.head = self._member(width)
        self.more = nn.ModuleList(nn.Sequential(*self._member(width)) for _ in range(c.members - 1))
        if c.store_dtype != "float32":
            self.register_state_dict_post_hook(store_as(STORE_DTYPES[c.store_dtype]))

    def _member(self, size: int) -> tuple[nn.Module, nn.Module]:
        """One member: the hidden layers (or input dropout for a linear head) and the output layer."""
        c = self.config
        blocks: list[nn.Module] = []
        for _ in range(c.layers):
            blocks += [nn.Linear(size, c.hidden), nn.ReLU(), nn.Dropout(c.dropout)]
            size = c.hidden
        return nn.Sequential(nn.Dropout(c.dropout) if c.layers == 0 else nn.Identity(), *blocks), nn.Linear(
            size, head_size(self.task))

    def pooled(self, batch: Batch) -> torch.Tensor:
        """(B, sum of widths [x2 with std]) pooled features of the present modalities."""
        parts = []
        for m in self.modalities:
            x = batch[m].float()
            if m == "text":
                keep = x.abs().sum(dim=-1) > 0
            else:
                lens = clean_lengths(batch.get(BATCH_LENGTHS[m]), x.shape[0], x.shape[1]).to(x.device)
                keep = torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]
            parts.append(masked_pool(x, keep, self.config.pooling == "mean_std"))
        return torch.cat(parts, dim=-1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.pooled(batch)
        first = self.head(self.mlp(x))
        if not len(self.more):
            return head_outputs(first, self.task)
        ys = torch.stack([first, *(m(x) for m in self.more)])  # (members, B, head_size)
        if self.task.is_classes:  # mean of the members' probabilities; logits = its log, so softmax gives it back
            out = class_outputs(ys.float().softmax(dim=-1).mean(dim=0).clamp_min(1e-12).log())
        else:
            out = {"pred": ys.mean(dim=0).squeeze(-1)}
        return {**out, "members": ys}

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        """The sum of the members' own losses: each member gets the gradient it would get alone."""
        outs = [head_outputs(y, self.task) for y in out["members"]] if "members" in out else [out]
        return LossOut(sum(l1_or_class_loss(o, batch, self.task) for o in outs))

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("all", [p for p in self.parameters() if p.requires_grad], self.config.lr,
                           self.config.weight_decay)]

    def auto_select(self) -> str:
        return "max:UAR" if self.task.is_classes else "val_loss"
