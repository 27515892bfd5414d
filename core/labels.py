"""Label conventions shared by extraction, training, metrics, models and prediction.

* Sample ids: ``video_id$_$clip_id`` (MMSA's separator).
* Split names: ``train``/``valid``/``test``; ``dev`` and ``val`` mean ``valid`` everywhere (label.csv
  ``mode``, ``msa-eval --split``, features files).
* SIMS-style 3 classes, as MMSA bins regression labels: ``y <= -0.1`` negative,
  ``-0.1 < y <= 0.1`` neutral, ``y > 0.1`` positive (edges compared in float32, like MMSA).
"""
from __future__ import annotations

from typing import Any

import numpy as np

ID_SEP = "$_$"  # MMSA's sample id: "video_id$_$clip_id"
SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"dev": "valid", "val": "valid"}
THREE_CLASS_EDGES = (-0.1, 0.1)
THREE_CLASS_NAMES = ("negative", "neutral", "positive")


def split_name(name: str) -> str:
    """Canonical split name (``dev``/``val`` -> ``valid``); other names pass through unchanged."""
    return SPLIT_ALIASES.get(name, name)


def three_classes(labels: Any) -> np.ndarray:
    """Regression labels -> {0: negative, 1: neutral, 2: positive} with MMSA's left-open, right-closed bins."""
    y = np.asarray(labels, dtype=np.float32).reshape(-1)
    lo, hi = (np.float32(e) for e in THREE_CLASS_EDGES)
    return np.where(y <= lo, 0, np.where(y <= hi, 1, 2)).astype(np.int64)
