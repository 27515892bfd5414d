"""Group-aware splits (``msa-train --group-by speaker``): no group (speaker, actor, video) in two splits.

The group of a row is ``video_id`` (the part of its id before MMSA's ``$_$``) or any label.csv column
that msa-extract kept (``col_<name>``). What happens depends on the splits the file has:

- only ``all``: the groups are shuffled with a fixed seed and dealt into train/valid/test so that each
  split's share of rows comes close to the ratio;
- ``train`` (and maybe ``test``) but no ``valid``: valid is carved out of train the same way;
- ``train`` and ``valid``: the existing splits are checked, and a group found in two of them is an error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from msa.core.errors import DataError, UsageError
from msa.core.labels import ID_SEP
from msa.pipeline.train.data import ALL_SPLIT, SPLITS, FeatureSet, Split

VIDEO_ID = "video_id"
DEFAULT_RATIO = (0.8, 0.1, 0.1)


def groups_of(split: Split, column: str, where: str = "") -> np.ndarray:
    """(N,) group names of ``split``'s rows: ``video_id`` from the ids, else the label.csv column."""
    if column in split.columns:
        return split.columns[column]
    if column == VIDEO_ID and split.ids is not None:
        return np.array([str(i).split(ID_SEP)[0] for i in split.ids])
    have = ", ".join([VIDEO_ID, *split.columns]) if split.ids is not None else ", ".join(split.columns) or "none"
    raise DataError(f"{where}split {split.name!r} has no column {column!r} to group by; it has: {have} "
                    "(label.csv columns are kept by msa-extract)")


def assign_groups(groups: np.ndarray, ratio: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Row indices per part: whole groups, dealt in a seeded order to the part furthest below its share.

    Every part with a positive share gets at least one group; fewer groups than such parts is an error.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    if ratio.ndim != 1 or (ratio < 0).any() or ratio.sum() <= 0:
        raise UsageError(f"split ratio must be non-negative numbers with a positive sum, got {ratio.tolist()}")
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    wanted = np.flatnonzero(ratio > 0)
    if len(names) < len(wanted):
        raise DataError(f"{len(names)} group(s) cannot fill {len(wanted)} splits without sharing a group")
    order = np.random.default_rng(seed).permutation(len(names))
    target = ratio / ratio.sum() * len(groups)
    filled = np.zeros(len(ratio))
    part_of = np.empty(len(names), dtype=np.int64)
    for k, g in enumerate(order):
        # the first groups seed every part (smallest share first); then the largest shortfall wins
        part = wanted[np.argsort(target[wanted], kind="stable")][k] if k < len(wanted) else \
            wanted[np.argmax((target - filled)[wanted])]
        part_of[g] = part
        filled[part] += counts[g]
    return [np.flatnonzero(part_of[inverse] == p) for p in range(len(ratio))]


def take(split: Split, index: np.ndarray, name: str) -> Split:
    """The rows ``index`` of ``split`` as a new split called ``name``."""
    changes: dict[str, Any] = {"name": name}
    for f in dataclasses.fields(split):
        v = getattr(split, f.name)
        if isinstance(v, np.ndarray):
            changes[f.name] = v[index]
        elif isinstance(v, dict):
            changes[f.name] = {k: a[index] for k, a in v.items()}
    return dataclasses.replace(split, **changes)


def group_splits(fs: FeatureSet, column: str, ratio: Sequence[float] = DEFAULT_RATIO,
                 seed: int = 0) -> tuple[FeatureSet, dict[str, list[str]]]:
    """``fs`` with group-disjoint train/valid(/test) splits, and the groups of each split (provenance)."""
    where = fs._where()
    if len(ratio) != 3:
        raise UsageError(f"split ratio needs three numbers (train valid test), got {list(ratio)}")
    splits = dict(fs.splits)
    if set(splits) == {ALL_SPLIT}:
        whole = splits.pop(ALL_SPLIT)
        parts = assign_groups(groups_of(whole, column, where), ratio, seed)
        splits = {n: take(whole, idx, n) for n, idx in zip(SPLITS, parts) if idx.size}
    elif ALL_SPLIT in splits:
        raise DataError(f"{where}mixes an 'all' split with {', '.join(k for k in splits if k != ALL_SPLIT)}")
    elif "train" in splits and "valid" not in splits:
        train = splits.pop("train")
        parts = assign_groups(groups_of(train, column, where), ratio[:2], seed)
        splits = {"train": take(train, parts[0], "train"), "valid": take(train, parts[1], "valid"), **splits}
    members = {n: sorted(set(groups_of(s, column, where).tolist())) for n, s in splits.items()}
    seen: dict[str, str] = {}
    for n, gs in members.items():
        for g in gs:
            if g in seen:
                raise DataError(f"{where}{column} {g!r} is in both {seen[g]!r} and {n!r}; a group must stay in one "
                                "split (fix label.csv's mode column, or extract without it and let --group-by split)")
            seen[g] = n
    return dataclasses.replace(fs, splits=splits), members
