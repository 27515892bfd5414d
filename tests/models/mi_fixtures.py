"""Small synthetic batches and a two-optimiser step driver for the MIMRL/MMIM tests."""
from __future__ import annotations

import torch

from msa.models.base import Dims, MSAModel

DIMS = Dims(text=32, audio=5, vision=7, text_len=10, audio_len=12, vision_len=9, n_train=32)


def make_batch(n: int, seed: int, label_low: float = -3.0, label_high: float = 3.0) -> dict[str, torch.Tensor]:
    """MMSA-shaped batch: BERT ids with padding, audio/vision with trailing all-zero frames."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, DIMS.text_len), generator=g)
    mask = torch.ones_like(ids)
    ids[:, 7:], mask[:, 7:] = 0, 0
    audio = torch.randn(n, DIMS.audio_len, DIMS.audio, generator=g)
    vision = torch.randn(n, DIMS.vision_len, DIMS.vision, generator=g)
    a_len = torch.randint(3, DIMS.audio_len + 1, (n,), generator=g)
    v_len = torch.randint(3, DIMS.vision_len + 1, (n,), generator=g)
    audio[torch.arange(DIMS.audio_len) >= a_len[:, None]] = 0
    vision[torch.arange(DIMS.vision_len) >= v_len[:, None]] = 0
    labels = label_low + (label_high - label_low) * torch.rand(n, generator=g)
    return {"text_bert": torch.stack([ids, mask, torch.zeros_like(ids)], 1), "audio": audio, "audio_lengths": a_len,
            "vision": vision, "vision_lengths": v_len, "labels": labels, "index": torch.arange(n) + seed * n}


def optimisers(model: MSAModel, lr_scale: float = 1.0) -> dict[str, torch.optim.Optimizer]:
    """One Adam per stage, from the model's named parameter groups (as the trainer builds them)."""
    groups: dict[str, list[dict]] = {}
    for g in model.param_groups():
        groups.setdefault(g.stage, []).append({"params": g.params, "lr": g.lr * lr_scale})
    return {stage: torch.optim.Adam(gs) for stage, gs in groups.items()}


def step(model: MSAModel, opts: dict[str, torch.optim.Optimizer], batch: dict, epoch: int, stage: str):
    """One training step of ``stage``: forward, loss, backward, after_backward hook, step that stage's optimiser."""
    model.train()
    for o in opts.values():
        o.zero_grad()
    out = model(batch)
    lo = model.loss(out, batch, epoch, stage)
    lo.loss.backward()
    model.after_backward(out, batch, epoch)
    opts[stage].step()
    return lo


def snapshot(model: MSAModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model: MSAModel) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
