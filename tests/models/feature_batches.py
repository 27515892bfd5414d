"""A synthetic batch of feature sequences (text, audio, vision) for the fusion-model tests (LMF, MulT, TFN)."""
from __future__ import annotations

import torch

from msa.models.base import Dims


def feature_batch(dims: Dims, n: int, seed: int = 0, lengths: bool = False) -> dict[str, torch.Tensor]:
    """Random text/audio/vision sequences of ``dims``' shapes and labels in [-3, 3); with ``lengths`` also random
    audio and vision lengths (drawn right after their modality, so a seed gives the same batch as before)."""
    g = torch.Generator().manual_seed(seed)
    batch = {"text": torch.randn(n, dims.text_len, dims.text, generator=g)}
    for m, width, length in (("audio", dims.audio, dims.audio_len), ("vision", dims.vision, dims.vision_len)):
        batch[m] = torch.randn(n, length, width, generator=g)
        if lengths:
            batch[f"{m}_lengths"] = torch.randint(1, length + 1, (n,), generator=g)
    batch["labels"] = torch.rand(n, generator=g) * 6 - 3
    return batch
