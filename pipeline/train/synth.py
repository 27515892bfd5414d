"""Generated MMSA-schema feature dicts with a learnable signal, for tests and benchmarks.

Every modality carries a noisy copy of one latent sentiment ``z`` per sample, and the label is a
function of ``z``, so a model that learns anything beats the mean predictor. The text ids carry the
signal through polarity tokens, so BERT-based models can learn it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MOSI_SIZES = {"train": 1284, "valid": 229, "test": 686}
CLS_ID, SEP_ID = 101, 102
POS_IDS = np.arange(2000, 2010)  # "polarity words": any ids in the 30522-token BERT vocabulary
NEG_IDS = np.arange(3000, 3010)


@dataclass(frozen=True)
class SynthSpec:
    """Sizes and shapes of a generated file; defaults are small (tests)."""

    sizes: tuple[tuple[str, int], ...] = (("train", 48), ("valid", 16), ("test", 16))
    text_len: int = 12
    text_dim: int = 16
    audio_len: int = 20
    audio_dim: int = 5
    vision_len: int = 15
    vision_dim: int = 7
    dataset: str = "mosi"  # mosi | sims | phq8 (label range and style)
    aligned: bool = False  # MMSA aligned layout: no *_lengths keys, audio/vision on the text time axis
    noise: float = 0.5


def mosi_sized(**overrides: Any) -> SynthSpec:
    """The MOSI shape used by the benchmark: 1284/229/686 samples; text 50x768, audio 500x5, vision 375x20."""
    base = dict(sizes=tuple(MOSI_SIZES.items()), text_len=50, text_dim=768, audio_len=500, audio_dim=5,
                vision_len=375, vision_dim=20)
    base.update(overrides)
    return SynthSpec(**base)


def _labels(z: np.ndarray, dataset: str) -> np.ndarray:
    if dataset == "sims":
        return np.clip(np.round(np.tanh(z) * 5) / 5, -1, 1)
    if dataset == "phq8":
        return np.clip(np.round(8 + 5 * z), 0, 24)
    return np.clip(np.round(1.5 * z * 3) / 3, -3, 3)  # MOSI labels are averages of 3 ratings


def _sequence(rng: np.random.Generator, z: np.ndarray, length: int, direction: np.ndarray, lengths: np.ndarray,
              noise: float) -> np.ndarray:
    """Noise plus ``z`` along a fixed per-modality ``direction`` (shared by every split)."""
    n, dim = z.shape[0], direction.shape[0]
    x = noise * rng.standard_normal((n, length, dim), dtype=np.float32)
    x += z[:, None, None].astype(np.float32) * direction[None, None, :]
    x[np.arange(length)[None, :] >= lengths[:, None]] = 0.0
    return x


def _bert_ids(rng: np.random.Generator, z: np.ndarray, length: int, lengths: np.ndarray) -> np.ndarray:
    n = z.shape[0]
    ids = rng.integers(5000, 20000, size=(n, length))
    polar = np.where(z[:, None] >= 0, rng.choice(POS_IDS, size=(n, length)), rng.choice(NEG_IDS, size=(n, length)))
    strength = np.minimum(np.abs(z) * 3, length).astype(int)
    use = np.arange(length)[None, :] < (1 + strength[:, None])
    ids = np.where(use, polar, ids)
    ids[:, 0] = CLS_ID
    pos = np.arange(length)[None, :]
    ids[pos == (lengths[:, None] - 1)] = SEP_ID
    mask = (pos < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    return np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.int64)


def make_mmsa(spec: SynthSpec = SynthSpec(), seed: int = 0) -> dict[str, Any]:
    """An MMSA-schema dict (train/valid/test, or whatever ``spec.sizes`` names) with float32 features."""
    rng = np.random.default_rng(seed)
    directions = {m: rng.standard_normal(d).astype(np.float32)
                  for m, d in (("text", spec.text_dim), ("audio", spec.audio_dim), ("vision", spec.vision_dim))}
    out: dict[str, Any] = {}
    for split, n in spec.sizes:
        z = rng.standard_normal(n).astype(np.float32)
        y = _labels(z, spec.dataset).astype(np.float32)
        t_len = rng.integers(max(3, spec.text_len // 2), spec.text_len + 1, size=n)
        a_len, v_len = t_len, t_len
        if not spec.aligned:
            a_len = rng.integers(max(1, spec.audio_len // 2), spec.audio_len + 1, size=n)
            v_len = rng.integers(max(1, spec.vision_len // 2), spec.vision_len + 1, size=n)
        audio_len = spec.text_len if spec.aligned else spec.audio_len
        vision_len = spec.text_len if spec.aligned else spec.vision_len
        d: dict[str, Any] = {
            "id": np.array([f"{split}_vid$_${i}" for i in range(n)], dtype=object),
            "raw_text": np.array([f"generated sentence {i}" for i in range(n)], dtype=object),
            "text": _sequence(rng, z, spec.text_len, directions["text"], t_len, spec.noise),
            "text_bert": _bert_ids(rng, z, spec.text_len, t_len),
            "audio": _sequence(rng, z, audio_len, directions["audio"], a_len, spec.noise),
            "vision": _sequence(rng, z, vision_len, directions["vision"], v_len, spec.noise),
            "regression_labels": y,
            "annotations": np.array(["Negative" if v < 0 else "Positive" if v > 0 else "Neutral" for v in y], dtype=object),
            "classification_labels": np.sign(y).astype(np.float32) + 1,
        }
        if not spec.aligned:
            d["audio_lengths"] = a_len.astype(np.int64).tolist()  # MMSA stores plain lists
            d["vision_lengths"] = v_len.astype(np.int64).tolist()
        if spec.dataset == "sims":
            for m in ("T", "A", "V"):
                d[f"regression_labels_{m}"] = np.clip(y + 0.2 * rng.standard_normal(n), -1, 1).astype(np.float32)
        out[split] = d
    return out
