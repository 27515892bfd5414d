"""Build the MMSA-schema features file from cached per-clip features.

The only place where sequences are padded or truncated (lengths are recorded). Output layout, per
split (``train``/``valid``/``test`` from label.csv, or ``all``): ``id``, ``raw_text``, ``text`` (N,L,D),
``text_bert`` (N,3,L), ``audio`` (N,Ta,Da), ``vision`` (N,Tv,Dv), ``text_lengths``, ``audio_lengths``,
``vision_lengths``, ``regression_labels`` (NaN where label.csv gives none), ``annotations``, ``flags``, ``language``
(the transcript's language code from ASR, "" when unknown), ``regression_labels_T/A/V`` when label.csv has them, ``classification_labels`` (int64 index into the
stamp's ``classes``) when it has a ``class`` column, and ``col_<name>`` (str) for each of its other
columns (e.g. ``col_speaker``, for group-aware splits); all features float32. A top-level ``config``
stamps each modality's FeatureSpec (with spec_hash), the padding lengths, the class names and
``text_vocab``, the identity of the vocabulary the ``text_bert`` ids come from.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from msa.extractors.base import Features

from msa.core.io import atomic_write_bytes
from msa.core.modalities import TO_BATCH
from msa.pipeline.extract.cache import FeatureCache
from msa.core.errors import DataError, ExtractionError
from msa.core.hashing import canonical_json
from msa.pipeline.extract.sources import MODES, Item
from msa.pipeline.train.data import CLASS_KEY, COLUMN_PREFIX

FORMAT = "msa-features"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Entry:
    """One finished clip: where its features sit in the cache and how long each sequence is."""

    item: Item
    refs: dict[str, tuple[str, str, str]]  # modality -> (extractor name, spec_hash, cache key)
    lengths: dict[str, int]
    transcript: str
    flags: tuple[str, ...] = ()
    words: tuple[tuple[str, float, float], ...] = field(default=())
    language: str | None = None  # the transcript's language (ASR's detection), None when unknown


def resolve_max_len(entries: list[Entry], modalities: list[str], caps: dict[str, int | None],
                    exact: bool = False) -> dict[str, int]:
    """Padded length per modality: the longest sequence, cut to ``caps[modality]`` when given (min 1);
    ``exact``: the caps themselves (a bundle's trained lengths at prediction time)."""
    out = {}
    for m in modalities:
        longest = max((e.lengths.get(m, 0) for e in entries), default=0)
        cap = caps.get(m)
        out[m] = max(1, cap if exact and cap else min(longest, cap) if cap else longest)
    return out


def pack(rows: Iterable[Features | None], n: int, length: int, dim: int,
         with_bert: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(data (n, length, dim), lengths (n,), text_bert (n, 3, length) or None): each row's sequence cut
    to ``length`` and zero-padded at the end. The only padding rule of msa; ``rows`` is consumed
    lazily (one clip's features in memory at a time), a None row stays all zeros."""
    arr = np.zeros((n, length, dim), dtype=np.float32)
    lens = np.zeros(n, dtype=np.int64)
    bert = np.zeros((n, 3, length), dtype=np.float32) if with_bert else None
    for i, feats in enumerate(rows):
        if feats is None:
            continue
        t = min(feats.data.shape[0], length)
        arr[i, :t] = feats.data[:t]
        lens[i] = t
        if bert is not None:
            tb = np.asarray(feats.extra["text_bert"])[:, :length]
            bert[i, :, : tb.shape[1]] = tb
    return arr, lens, bert


def assemble(
    entries: list[Entry],
    specs: dict[str, dict[str, Any]],
    cache: FeatureCache,
    *,
    has_modes: bool,
    sub_label_keys: tuple[str, ...] = (),
    max_len: dict[str, int | None] | None = None,
    exact_len: bool = False,
    aligned: bool = False,
    text_vocab: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    class_names: tuple[str, ...] = (),
    extra_columns: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The MMSA dict for ``entries`` (in order). Loads one clip's features at a time from ``cache``.

    ``aligned``: audio and vision are averaged over each text token's word span (MMSA's aligned
    layout: every modality has the text's length); needs word timings (ASR transcripts).
    ``text_vocab``: identity of the tokenizer vocabulary behind ``text_bert`` (the text extractor's
    ``vocabulary()``), stamped as ``config["text_vocab"]`` so training can refuse a text encoder
    that would read the ids with another vocabulary.
    """
    modalities = [m for m in ("text", "audio", "visual") if m in specs]
    if aligned and "text" not in specs:
        raise DataError("word alignment needs a text extractor", reason="usage")
    lengths = resolve_max_len(entries, modalities, max_len or {}, exact_len)
    if aligned:
        lengths.update({m: lengths["text"] for m in modalities})
    splits = [m for m in MODES if any(e.item.mode == m for e in entries)] if has_modes else ["all"]
    first = next((e for e in entries if "text" in e.refs), None)
    has_bert = "text" in specs and first is not None and "text_bert" in _load(cache, first, "text").extra
    out: dict[str, Any] = {}
    for split in splits:
        chosen = [e for e in entries if (e.item.mode if has_modes else "all") == split]
        out[split] = _split(chosen, specs, cache, lengths, sub_label_keys, has_bert, aligned)
        out[split].update(_class_and_columns(chosen, class_names, extra_columns))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "specs": {TO_BATCH[m]: specs[m] for m in modalities},
        "max_len": {TO_BATCH[m]: lengths[m] for m in modalities},
        "splits": splits,
        "sub_labels": list(sub_label_keys),
        **({"classes": list(class_names)} if class_names else {}),
        "aligned": aligned,
        "text_vocab": text_vocab if has_bert else None,
        "padding": "zeros at the end; truncation keeps the first max_len steps",
        **(extra_config or {}),
    }
    # fresh JSON-decoded objects: the pickle's bytes then do not depend on which worker built what
    out["config"] = json.loads(canonical_json(config))
    return out


def _split(
    entries: list[Entry],
    specs: dict[str, dict[str, Any]],
    cache: FeatureCache,
    lengths: dict[str, int],
    sub_label_keys: tuple[str, ...],
    has_bert: bool,
    aligned: bool = False,
) -> dict[str, Any]:
    n = len(entries)
    d: dict[str, Any] = {
        "id": np.array([e.item.id for e in entries], dtype=str),
        "raw_text": np.array([e.transcript for e in entries], dtype=str),
        "language": np.array([e.language or "" for e in entries], dtype=str),
        "annotations": np.array([e.item.annotation for e in entries], dtype=str),
        "flags": np.array([",".join(e.flags) for e in entries], dtype=str),
        "regression_labels": np.array(
            [np.nan if e.item.label is None else e.item.label for e in entries], dtype=np.float32
        ),
    }
    for k in sub_label_keys:
        d[f"regression_labels_{k}"] = np.array([e.item.sub_labels[k] for e in entries], dtype=np.float32)
    for m in ("text", "audio", "visual"):
        if m not in specs:
            continue
        key, L, dim = TO_BATCH[m], lengths[m], int(specs[m]["dim"])
        arr, lens, bert = pack((_row(cache, e, m, dim, aligned) for e in entries), n, L, dim,
                               m == "text" and has_bert)
        d[key] = arr
        d[f"{key}_lengths"] = lens
        if bert is not None:
            d["text_bert"] = bert
    return d


def _row(cache: FeatureCache, e: Entry, m: str, dim: int, aligned: bool) -> Features | None:
    """One clip's features for modality ``m`` (word-aligned when asked), its width checked."""
    feats = _load(cache, e, m)
    if feats is None:
        return None
    if aligned and m != "text":
        feats = align_to_tokens(feats, _load(cache, e, "text"), e.words)
    if feats.data.shape[1] != dim and feats.data.shape[0] > 0:
        raise DataError(
            f"{e.item.id}: {m} features have dim {feats.data.shape[1]}, spec says {dim}; "
            f"delete {cache.root / e.refs[m][0] / e.refs[m][1]} and rerun",
        )
    return feats


def _class_and_columns(entries: list[Entry], class_names: tuple[str, ...],
                       extra_columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Class indices (into ``class_names``) and label.csv's other columns, one value per clip."""
    d: dict[str, np.ndarray] = {}
    if class_names:
        index = {c: i for i, c in enumerate(class_names)}
        d[CLASS_KEY] = np.array([index[e.item.label_class] for e in entries], dtype=np.int64)  # type: ignore[index]
    for c in extra_columns:
        d[COLUMN_PREFIX + c] = np.array([dict(e.item.columns).get(c, "") for e in entries], dtype=str)
    return d


def align_to_tokens(feats: Features, text: Features, words: tuple[tuple[str, float, float], ...]) -> Features:
    """``feats`` averaged over each text token's word span: one row per token, zeros for special tokens.

    A token belongs to the word whose centre equals its time (text extractors time content tokens
    at their word's centre); a word shorter than a frame takes the frame nearest its centre.
    """
    spans = np.array([(s, e) for _, s, e in words], dtype=np.float64).reshape(-1, 2)
    centres = spans.mean(axis=1)
    out = np.zeros((text.data.shape[0], feats.data.shape[1]), dtype=np.float32)
    if feats.data.shape[0] == 0 or len(spans) == 0:
        return Features(out, text.times)
    for i, t in enumerate(text.times):
        hit = np.flatnonzero(np.isclose(centres, t, atol=1e-6))
        if hit.size == 0:
            continue  # [CLS], [SEP], ...
        start, end = spans[hit[0]]
        inside = (feats.times >= start) & (feats.times < end)
        rows = feats.data[inside] if inside.any() else feats.data[[np.argmin(np.abs(feats.times - t))]]
        out[i] = rows.mean(axis=0)
    return Features(out, text.times)


def _load(cache: FeatureCache, e: Entry, modality: str) -> Any:
    ref = e.refs.get(modality)
    if ref is None:  # modality missing in this clip (e.g. --missing empty): zeros, length 0
        return None
    feats = cache.load(*ref)
    if feats is None:
        raise ExtractionError(
            f"{e.item.id}: cached {modality} features vanished during assembly ({cache.path(*ref)}); rerun to re-extract",
            reason="cache_missing",
        )
    return feats


# --- writing and reading -----------------------------------------------------------------------


def write_features(data: dict[str, Any], path: Path, fmt: str = "pkl") -> Path:
    """Write atomically as pickle (what MMSA reads) or as ``.npz`` (no pickle inside: safe to share).

    Pickles can run code when loaded: only load ``.pkl`` files you made or trust.
    """
    if fmt == "pkl":
        atomic_write_bytes(path, pickle.dumps(data, protocol=4))
        return path
    if fmt == "npz":
        from msa.pipeline.train.data import save_npz  # imports torch-side modules: only when asked for

        return save_npz(data, path)
    raise ValueError(f"unknown format {fmt!r}")
