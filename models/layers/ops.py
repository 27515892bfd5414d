"""Small tensor operations shared by the model zoo."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with the distribution of ``F.dropout`` (keep with probability 1 − p, scale 1/(1 − p)).

    On CPU the mask is built in place from ``rand >= p``: about 2.5x faster (forward + backward) than
    ``F.dropout``'s Bernoulli sampler on large tensors (TFN's fusion tensor). On CUDA, ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.is_cuda or p >= 1.0:
        return F.dropout(x, p, True)
    mask = torch.rand(x.shape, dtype=x.dtype, device=x.device).ge_(p).mul_(1.0 / (1.0 - p))
    return x * mask
