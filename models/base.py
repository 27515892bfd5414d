"""The contract every model implements so that one trainer can train them all.

A model is built from ``(config, dims, task)``: its frozen config dataclass, the input dimensions
read from the data file, and the task (label range, metrics). It returns a dict from ``forward`` with
at least ``"pred"`` (B,), computes its own ``loss``, names its parameter groups, and may use hooks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import nn

from msa.core.config import Checked, Positive, Size, matching, parses
from msa.core.errors import UsageError

Batch = dict[str, torch.Tensor]
"""Keys: text (B,L,Dt) float, text_bert (B,3,L) long, audio (B,Ta,Da), audio_lengths (B,),
vision (B,Tv,Dv), vision_lengths (B,), labels (B,) float, optional labels_T/labels_A/labels_V (B,),
index (B,) long = position of each sample in its split (for per-sample state such as Self-MM's banks)."""


@dataclass(frozen=True)
class Dims:
    """Input shapes taken from the data file, never hard-coded per dataset."""

    text: int
    audio: int
    vision: int
    text_len: int
    audio_len: int
    vision_len: int
    n_train: int = 0  # size of the training split (per-sample banks)


@dataclass(frozen=True)
class Task:
    """What is predicted: the label range and the metric family; ``classes`` for classification tasks.

    With ``classes`` the labels are class indices, ``low``/``high`` are 0 and n_classes - 1, and a model
    returns ``logits`` (B, n_classes) and ``pred`` = the argmax as float (B,).
    """

    name: str  # mosi | mosei | sims | simsv2 | phq8 | custom
    low: float
    high: float
    metrics: str  # "mosi" | "sims" | "phq8" | "regression" | "classification" | "binary"
    n_classes: int = 0  # >0 only for classification models (e.g. CLIP-CA-MSA's 3 classes)
    classes: tuple[str, ...] = ()  # class names when the labels are classes (metrics "classification"/"binary")
    class_weights: tuple[float, ...] = ()  # cross-entropy weight per class; empty: unweighted

    @property
    def is_classes(self) -> bool:
        """Labels are class indices 0..n_classes-1 (not regression values binned into classes)."""
        return bool(self.classes)


@dataclass
class ParamGroup:
    """A named optimiser group. ``stage`` says which optimiser owns it (see ``MSAModel.stages``)."""

    name: str
    params: list[nn.Parameter]
    lr: float
    weight_decay: float = 0.0
    stage: str = "main"


def parse_select(select: str) -> tuple[str, bool]:
    """``val_loss`` -> ("loss", lower is better); ``mmsa_loss`` -> ("loss_mmsa", lower: MMSA's rule, the
    validation loss averaged over batches and rounded to 4 decimals); ``max:CCC`` -> ("CCC", higher); ``min:MAE``;
    ``last`` -> ("last", False): no selection, the final epoch is kept (a fixed epoch count chosen beforehand,
    e.g. by grouped cross-validation; the valid split may then be absent)."""
    if select == "last":
        return "last", False
    if select == "val_loss":
        return "loss", False
    if select == "mmsa_loss":
        return "loss_mmsa", False
    mode, sep, name = select.partition(":")
    if not sep or mode not in ("max", "min") or not name:
        raise UsageError(f"bad selection rule {select!r}; use val_loss, mmsa_loss, last, max:<metric> or min:<metric>")
    return name, mode == "max"


def parse_scheduler(spec: str) -> tuple[str, tuple[Any, ...]]:
    """``plateau:P:F`` -> ("plateau", (P, F)); ``step:S:G``; ``multistep:M1,M2:G``. ValueError when malformed."""
    kind, _, rest = spec.partition(":")
    a, sep, b = rest.partition(":")
    if not sep or kind not in ("plateau", "step", "multistep"):
        raise ValueError(f"unknown scheduler {spec!r}; use plateau:P:F, step:S:G or multistep:M1,M2:G")
    first: Any = tuple(int(m) for m in a.split(",")) if kind == "multistep" else int(a)
    factor = float(b)
    if kind == "plateau":
        ok = first >= 0 and 0 < factor < 1
    else:
        steps = first if kind == "multistep" else (first,)
        ok = min(steps) >= 1 and list(steps) == sorted(steps) and 0 < factor < math.inf
    if not ok:
        raise ValueError(f"scheduler {spec!r} out of range")
    return kind, (first, factor)


def _is_select(v: str) -> bool:
    if v == "auto":
        return True
    try:
        parse_select(v)
    except UsageError:
        return False
    return True


Select = Annotated[str, matching(_is_select, "val_loss, mmsa_loss, auto, last, max:<metric> or min:<metric>")]
Scheduler = Annotated[str, parses(parse_scheduler, "a scheduler plateau:P:F (0 < F < 1), step:S:G or "
                                                "multistep:M1,M2:G (increasing M >= 1, G > 0)")]


@dataclass(frozen=True)
class TrainSettings(Checked):
    """Optimisation facts the trainer honours: the ``train`` part of every model's config."""

    optimizer: Literal["adam", "adamw"] = "adam"
    batch_size: Size = 32
    update_every: Size = 1  # gradient accumulation window (Self-MM 4, MulT 8)
    clip_value: Positive | None = None  # clip_grad_value_ after backward
    clip_norm: Positive | None = None  # clip_grad_norm_ after backward
    early_stop: Size = 8
    max_epochs: Size = 40
    select: Select = "val_loss"  # val_loss (min) | mmsa_loss | max:<metric> | min:<metric>, e.g. "max:CCC" | auto: the model's rule
    # | last: no selection or early stopping, the weights after max_epochs (valid split optional)
    scheduler: Scheduler | None = None  # "plateau:<patience>:<factor>" | "step:<size>:<gamma>" | "multistep:<m1,m2>:<gamma>"
    # audio/vision scaling with train-split statistics (stored in the bundle): none | zscore (per feature,
    # what --normalize asks for) | minmax (one min and max per modality over all true frames -> [-1, 1], MIMRL)
    normalize: Literal["none", "zscore", "minmax"] = "none"


@dataclass
class LossOut:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)  # scalars to log per step (e.g. MI estimates)


class MSAModel(nn.Module):
    """Base class. Subclasses set ``name`` and ``Config`` and implement forward/loss/param_groups.

    Hooks (optional, no-ops here) let a model keep training-time state without its own trainer:
    ``on_train_start(loader)``, ``on_epoch_start(epoch)``, ``after_backward(out, batch, epoch)``,
    ``on_epoch_end(epoch) -> dict`` (scalars merged into the epoch's results).
    Epochs are numbered from 1. Per batch the trainer zeroes gradients at the first batch of each
    accumulation window, then runs forward, ``loss``, backward, clipping, ``after_backward``, and
    steps at the end of the window (a trailing partial window is never stepped).
    Optional extras the trainer and bundles honour: ``eval_loss(out, batch)`` (else MAE of ``pred``,
    or cross-entropy on ``logits`` when classifying), a ``modalities`` class attribute (recorded in
    the bundle), ``weights_identity()`` on frozen pretrained submodules (referenced, not copied), and
    ``text_reach(meta)`` (how much of a transcript the model reads; ``msa-predict`` reports a cut).
    """

    name: ClassVar[str]
    uses_bert_ids: ClassVar[bool] = False  # reads text_bert ids (fine-tunes a text encoder)
    supports_classes: ClassVar[bool] = False  # trains on class-label tasks (Task.classes; models/layers/classify.py)
    required_modalities: ClassVar[tuple[str, ...]] = ("text", "audio", "vision")  # must have width > 0

    def __init__(self, config: Any, dims: Dims, task: Task) -> None:
        super().__init__()
        self.config = config
        self.dims = dims
        self.task = task

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        raise NotImplementedError

    def param_groups(self) -> list[ParamGroup]:
        raise NotImplementedError

    @classmethod
    def legacy_config(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A config saved by an older msa, in today's keys (flat training keys are moved by the caller)."""
        return saved

    def text_reach(self, meta: dict[str, Any]) -> tuple[int, int]:
        """(tokens of a transcript the model reads, tokens it has), from its text features' ``meta``: by default
        the text extractor's tokens (``n_tokens``), up to the trained text length and the config's
        ``max_tokens`` where it has one. 0 tokens where the extractor does not count them."""
        total = int(meta.get("n_tokens") or meta.get("text_bert_len") or 0)
        cap = min(self.dims.text_len, getattr(self.config, "max_tokens", None) or self.dims.text_len)
        return min(total, cap), total

    def train_settings(self) -> TrainSettings:
        """The config's ``train`` part; ``select = "auto"`` becomes the model's own rule (``auto_select``)."""
        train: TrainSettings = self.config.train
        return dataclasses.replace(train, select=self.auto_select()) if train.select == "auto" else train

    def auto_select(self) -> str:
        """The selection rule ``select = "auto"`` stands for (default: the validation loss)."""
        return "val_loss"

    def stages(self, epoch: int) -> list[tuple[str, float]]:
        """(stage name, passes over the train loader) for this epoch, in order; a fraction of a pass runs
        that share of its batches, the first ones (``trainer.pass_batches``).

        Each stage steps only the optimiser built from the param groups with that ``stage``
        (MIMRL: estimators then main network; MMIM: MMILB then main). Default: one "main" pass.
        """
        return [("main", 1)]

    # hooks -----------------------------------------------------------------
    def on_train_start(self, loader: Any) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def after_backward(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {}


# precisions a model may store its trained weights in (bundle size); loading casts them back
STORE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def store_as(dtype: torch.dtype) -> Any:
    """A state_dict post-hook that stores a module's floating tensors in ``dtype`` (loading casts back)."""

    def hook(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state if k.startswith(prefix)]:
            if state[key].is_floating_point():
                state[key] = state[key].detach().to(dtype)

    return hook
