"""Classification heads and loss shared by the models that support class-label tasks (``Task.classes``).

A model sizes its last layer with :func:`head_size`, returns :func:`class_outputs` from its logits
(``logits`` (B, C), ``probs`` and ``pred`` = the argmax as float, so code that reads ``pred`` still
works) and trains with :func:`class_loss`: cross-entropy with the task's optional class weights.
:func:`head_outputs` and :func:`l1_or_class_loss` do either, for models whose regression output is the
raw head value trained with L1 (MMSA's loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import Batch, Task


def head_size(task: Task) -> int:
    """Output width: one logit per class for class-label tasks, else one value."""
    return task.n_classes if task.is_classes else 1


def class_outputs(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """``logits``, ``probs`` (softmax) and ``pred`` (argmax, float) from (B, C) logits."""
    return {"logits": logits, "probs": logits.float().softmax(dim=-1), "pred": logits.argmax(dim=-1).to(logits.dtype)}


def class_loss(out: dict[str, torch.Tensor], batch: Batch, task: Task) -> torch.Tensor:
    """Cross-entropy of ``out["logits"]`` against the class indices in ``batch["labels"]``."""
    logits = out["logits"].float()
    weight = torch.tensor(task.class_weights, dtype=torch.float32, device=logits.device) if task.class_weights else None
    return F.cross_entropy(logits, batch["labels"].reshape(-1).long(), weight=weight)


def head_outputs(y: torch.Tensor, task: Task) -> dict[str, torch.Tensor]:
    """The outputs of a (B, head_size) head: class outputs, or ``pred`` (B,) for regression."""
    return class_outputs(y) if task.is_classes else {"pred": y.squeeze(-1)}


def l1_or_class_loss(out: dict[str, torch.Tensor], batch: Batch, task: Task) -> torch.Tensor:
    """Cross-entropy for class-label tasks, else the mean absolute error of ``pred`` (MMSA's L1)."""
    if task.is_classes:
        return class_loss(out, batch, task)
    return (out["pred"] - batch["labels"].reshape(-1).to(out["pred"].dtype)).abs().mean()
