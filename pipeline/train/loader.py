"""Torch side of the data: the Batch dict of ``models/base.py`` from a :class:`~msa.pipeline.train.data.Split`.

Also normalisation statistics (per-feature z-score, or MIMRL's global min-max to [-1, 1]), computed on
the training split over true (unpadded) frames and stored in the bundle so prediction applies exactly
the same transform.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from msa.pipeline.train.data import Split

NormStats = dict[str, dict[str, list[float]]]  # modality -> {"mean": [...], "std": [...]}
NORM_MODALITIES = ("audio", "vision")
_LEN_KEY = {"audio": "audio_lengths", "vision": "vision_lengths"}


def _frame_mask(split: Split, modality: str) -> np.ndarray:
    seq = getattr(split, modality)
    if modality == "text":
        if split.text_bert is not None and split.text_bert.shape[2] == seq.shape[1]:
            return split.text_bert[:, 1] > 0
        return np.ones(seq.shape[:2], dtype=bool)
    lengths = getattr(split, _LEN_KEY[modality])
    return np.arange(seq.shape[1])[None, :] < lengths[:, None]


def norm_stats(train: Split, modalities: tuple[str, ...] = NORM_MODALITIES, eps: float = 1e-6,
               kind: str = "zscore") -> NormStats:
    """Statistics over the true frames of ``train``, as ``(x - mean) / std`` per feature.

    ``zscore``: each feature's mean and std (a constant feature gets std 1). ``minmax``: one minimum and
    maximum per modality over all its true frames and features, mapped to [-1, 1] (MIMRL's global
    scaling), i.e. mean = (max + min) / 2 and std = (max - min) / 2 for every feature.
    """
    if kind not in ("zscore", "minmax"):
        raise ValueError(f"unknown normalisation {kind!r}; use zscore or minmax")
    out: NormStats = {}
    for m in modalities:
        seq = getattr(train, m)
        if seq is None:
            continue
        frames = seq[_frame_mask(train, m)].astype(np.float64)
        if kind == "minmax":
            lo, hi = (float(frames.min()), float(frames.max())) if frames.size else (0.0, 0.0)
            half = (hi - lo) / 2 if hi - lo >= eps else 1.0
            mean, std = np.full(seq.shape[2], (hi + lo) / 2), np.full(seq.shape[2], half)
        else:
            mean = frames.mean(axis=0)
            std = frames.std(axis=0)
            std = np.where(std < eps, 1.0, std)
        out[m] = {"mean": mean.tolist(), "std": std.tolist()}
    return out


def apply_norm(split: Split, stats: NormStats) -> dict[str, np.ndarray]:
    """Normalised copies of the modalities in ``stats``; padding stays exactly zero."""
    out = {}
    for m, s in stats.items():
        seq = getattr(split, m)
        if seq is None:
            continue
        if seq.shape[2] != len(s["mean"]):
            raise ValueError(f"normalisation stats for {m} have {len(s['mean'])} features, data has {seq.shape[2]}")
        mean = np.asarray(s["mean"], dtype=np.float32)
        std = np.asarray(s["std"], dtype=np.float32)
        x = (seq - mean) / std
        x[~_frame_mask(split, m)] = 0.0
        out[m] = x.astype(np.float32)
    return out


class SplitDataset(Dataset):
    """Indexable split yielding Batch dicts; ``__getitems__`` gathers a whole batch in one go."""

    def __init__(self, split: Split, stats: NormStats | None = None) -> None:
        self.split = split
        arrays: dict[str, np.ndarray] = {
            "audio": split.audio, "audio_lengths": split.audio_lengths,
            "vision": split.vision, "vision_lengths": split.vision_lengths,
            "labels": split.labels,
        }
        if split.text is not None:
            arrays["text"] = split.text
        if split.text_bert is not None:
            arrays["text_bert"] = split.text_bert
        for m, lab in split.unimodal.items():
            arrays[f"labels_{m}"] = lab
        if stats:
            arrays.update(apply_norm(split, stats))
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {k: v.index_select(0, idx) for k, v in self.tensors.items()}
        batch["index"] = idx
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def _identity(batch: Any) -> Any:
    return batch


def make_loader(split: Split, batch_size: int, *, shuffle: bool, seed: int = 0, stats: NormStats | None = None,
                dataset: SplitDataset | None = None) -> DataLoader:
    """A DataLoader whose shuffling comes from its own seeded generator (deterministic runs)."""
    ds = dataset if dataset is not None else SplitDataset(split, stats)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=_identity,
                      num_workers=0, drop_last=False)


class DeviceLoader:
    """Wraps a loader so every batch arrives on ``device`` (what models and their hooks see)."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
