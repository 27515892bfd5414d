"""``msa-eval --data label.csv`` without media: a text-only bundle scored on the CSV's ``text`` column.

Each row's text goes through the bundle's own text extractor (rebuilt from its spec and checked),
in-process; the rows are then padded into an MMSA-schema split exactly as ``assemble`` pads a
features file, so :func:`msa.pipeline.train.experiment.evaluate_bundle` scores it with msa-train's metrics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from msa.core.errors import DataError
from msa.core.hashing import file_sha256
from msa.core.labels import split_name
from msa.pipeline.extract.assemble import pack
from msa.pipeline.extract.sources import read_label_csv, row_mode
from msa.pipeline.train.data import FeatureSet, from_dict

REQUIRED = ("text", "label")


def label_csv_rows(path: Path, split: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Rows per split (``mode`` column; ``all`` when it has none), optionally only ``split``'s."""
    header, rows = read_label_csv(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(header)}); "
                        "a label.csv without media needs text and label", reason="bad_label_csv")
    want = split_name(split) if split else None
    out: dict[str, list[dict[str, str]]] = {}
    problems = []
    for i, row in enumerate(rows):
        mode = row_mode(row) or "all"
        if want is not None and mode != want:
            continue
        try:
            row["label"] = str(float(row["label"]))
        except (TypeError, ValueError):
            problems.append(f"line {i + 2}: label {row.get('label')!r} is not a number")
        if not (row.get("text") or "").strip():
            problems.append(f"line {i + 2}: empty text")
        out.setdefault(mode, []).append(row)
    if problems:
        more = f"; ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise DataError(f"{path} has {len(problems)} problem(s): {'; '.join(problems[:8])}{more}", reason="bad_label_csv")
    if not out:
        modes = sorted({(r.get("mode") or "").strip() or "all" for r in rows})
        raise DataError(f"{path} has no rows in split {split!r}; it has: {', '.join(modes) or 'no rows'}")
    return out


def label_csv_features(bundle: Any, path: Path, split: str | None = None,
                       log: Callable[[str], None] | None = None) -> FeatureSet:
    """A FeatureSet for ``split``'s rows of ``path``, text extracted with the bundle's text extractor."""
    from msa.extractors.base import Transcript

    from msa.pipeline.serve.predict import extractor_from_spec

    used = set(bundle.meta.get("modalities", ()))
    if used - {"text"}:
        raise DataError(f"{path.name}: a label.csv without media can only evaluate a text-only bundle; this one uses "
                        f"{', '.join(sorted(used))}: extract features with msa-extract and pass the .pkl/.npz")
    spec = bundle.specs.get("text")
    extractor = extractor_from_spec(spec, "text", bundle.path)
    raw: dict[str, Any] = {}
    for name, rows in label_csv_rows(Path(path), split).items():
        if log:
            log(f"msa-eval: extracting {extractor.name} text features for {len(rows)} {name} rows")
        feats = [extractor.encode(Transcript(r["text"].strip(), source="label_csv")) for r in rows]
        raw[name] = _split_arrays(feats, rows, bundle.dims)
    vocabulary = getattr(extractor, "vocabulary", None)  # the ids' vocabulary, checked against the bundle's
    raw["config"] = {"specs": {"text": spec}, "text_vocab": vocabulary() if vocabulary else None}
    fs = from_dict(raw, path=Path(path))
    fs.sha256 = file_sha256(path)
    return fs


def _split_arrays(feats: list[Any], rows: list[dict[str, str]], dims: Any) -> dict[str, np.ndarray]:
    """MMSA arrays: text (N, L, D) and text_bert (N, 3, L) cut/padded to the bundle's text length by
    assembly's own rule (:func:`~msa.pipeline.extract.assemble.pack`); audio/vision are one zero frame
    of the trained widths (the bundle ignores them)."""
    n, length = len(rows), max(1, dims.text_len)
    text, lengths, bert = pack(feats, n, length, feats[0].data.shape[1], with_bert=True)
    ids = [f"{r.get('video_id', '')}$_${r.get('clip_id', i)}" for i, r in enumerate(rows)]
    out = {"text": text} if dims.text else {}  # a bundle trained on token ids only has no text width
    return {
        **out, "id": np.array(ids, dtype=str), "raw_text": np.array([r["text"] for r in rows], dtype=str),
        "text_bert": bert, "text_lengths": lengths,
        "audio": np.zeros((n, 1, dims.audio), dtype=np.float32), "audio_lengths": np.ones(n, dtype=np.int64),
        "vision": np.zeros((n, 1, dims.vision), dtype=np.float32), "vision_lengths": np.ones(n, dtype=np.int64),
        "regression_labels": np.array([float(r["label"]) for r in rows], dtype=np.float32),
    }
