"""Feature files in the MMSA schema: load (.pkl or the safe .npz export), validate, describe.

Schema (what MMSA-FET writes and MMSA reads; msa-extract writes the same): a dict with one entry per
split (``train``/``valid``/``test``; ``dev`` is accepted for ``valid`` as in AVEC2019; ``all`` for
unsplit extractions), each a dict of arrays over N samples:

    text (N, L, Dt) float   text_bert (N, 3, L) ids/mask/types   audio (N, Ta, Da)   vision (N, Tv, Dv)
    audio_lengths (N,)      vision_lengths (N,)   (absent in MMSA's aligned files: derived here)
    regression_labels (N,)  regression_labels_T/_A/_V (N,) (SIMS)   id (N,) str   raw_text (N,) str
    classification_labels (N,) int: class index (classification tasks; names in the stamp's ``classes``)
    col_<name> (N,) str: label.csv's other columns (e.g. col_speaker, for --group-by)
    annotations (ignored)

A modality may be absent (e.g. audio-only extractions): it reads as zero-width features (N, 1, 0).
A file with class labels may leave ``regression_labels`` out or NaN; regression tasks then refuse it.

plus an optional top-level ``config`` stamp written by msa-extract: ``{"specs": {"text": spec, "audio":
spec, "vision": spec}, ...}`` where each spec is ``FeatureSpec.to_dict()`` (it carries ``spec_hash``).
PHQ-8 (AVEC2019 style) uses the same schema with ``train``/``dev``/``test`` splits, one row per
session and ``regression_labels`` = the PHQ-8 total (0..24).

SECURITY: loading a pickle can run arbitrary code. Only ``.pkl`` paths the user names are loaded; the
``.npz`` layout (:func:`save_npz` / :func:`load_npz`) holds plain arrays and is loaded with
``allow_pickle=False``.
"""
from __future__ import annotations

import json
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msa.core.errors import DataError
from msa.core.labels import split_name
from msa.core.modalities import BATCH, batch_name
from msa.core.hashing import file_sha256
from msa.core.io import atomic_path

if TYPE_CHECKING:  # torch stays unimported until a model is built (fast --help)
    from msa.models.base import Dims, Task

SPLITS = ("train", "valid", "test")
ALL_SPLIT = "all"
STAMP_KEY = "config"
NPZ_FORMAT = "msa-features-npz/1"
NPZ_META = "__meta__"
SEQ_KEYS = BATCH
UNIMODAL = ("T", "A", "V")
CLASS_KEY = "classification_labels"  # MMSA's key for class indices
COLUMN_PREFIX = "col_"  # label.csv's other columns, kept per split by msa-extract


@dataclass(frozen=True)
class DatasetPreset:
    """Label range and metric family of a dataset; ``custom`` takes its range from the file."""

    name: str
    low: float | None
    high: float | None
    metrics: str


DATASETS: dict[str, DatasetPreset] = {
    p.name: p
    for p in (
        DatasetPreset("mosi", -3.0, 3.0, "mosi"),
        DatasetPreset("mosei", -3.0, 3.0, "mosi"),
        DatasetPreset("sims", -1.0, 1.0, "sims"),
        DatasetPreset("simsv2", -1.0, 1.0, "sims"),
        DatasetPreset("phq8", 0.0, 24.0, "phq8"),
        DatasetPreset("custom", None, None, "regression"),
        DatasetPreset("binary", 0.0, 1.0, "binary"),  # two classes (classes.py): --task classification
    )
}


@dataclass
class Split:
    """One split's arrays, validated and normalised to fixed dtypes."""

    name: str
    labels: np.ndarray  # (N,) float32
    audio: np.ndarray  # (N, Ta, Da) float32
    audio_lengths: np.ndarray  # (N,) int64 in [1, Ta]
    vision: np.ndarray
    vision_lengths: np.ndarray
    text: np.ndarray | None = None  # (N, L, Dt) float32
    text_bert: np.ndarray | None = None  # (N, 3, L) int64
    unimodal: dict[str, np.ndarray] = field(default_factory=dict)  # "T"/"A"/"V" -> (N,) float32
    ids: np.ndarray | None = None  # (N,) str
    raw_text: np.ndarray | None = None
    classes: np.ndarray | None = None  # (N,) int64 class index (classification_labels)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # label.csv column name -> (N,) str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class FeatureSet:
    """A loaded features file: its splits, the feature-spec stamp and provenance facts."""

    splits: dict[str, Split]
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> FeatureSpec dict
    stamp: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None
    warnings: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = ()  # the stamp's ``classes``; "0", "1", ... when the file names none

    def split(self, name: str) -> Split:
        name = split_name(name)
        if name not in self.splits:
            raise DataError(f"{self._where()}has no split {name!r}; it has: {', '.join(self.splits)}")
        return self.splits[name]

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def dims(self) -> "Dims":
        from msa.models.base import Dims

        s = next(iter(self.splits.values()))
        text_dim = s.text.shape[2] if s.text is not None else 0
        text_len = s.text.shape[1] if s.text is not None else s.text_bert.shape[2]  # type: ignore[union-attr]
        return Dims(
            text=int(text_dim), audio=int(s.audio.shape[2]), vision=int(s.vision.shape[2]),
            text_len=int(text_len), audio_len=int(s.audio.shape[1]), vision_len=int(s.vision.shape[1]),
            n_train=len(self.splits["train"]) if "train" in self.splits else 0,
        )

    def has(self, key: str) -> bool:
        """Whether every split carries ``key`` (``text``, ``text_bert`` or a unimodal label ``T``)."""
        if key in UNIMODAL:
            return all(key in s.unimodal for s in self.splits.values())
        return all(getattr(s, key) is not None for s in self.splits.values())

    def _where(self) -> str:
        return f"{self.path.name} " if self.path else "features "


# ---------------------------------------------------------------------------------------------
# loading

def load_features(path: str | Path) -> FeatureSet:
    """Load a user-named ``.pkl`` (runs pickle: trusted files only) or a safe ``.npz`` export."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"features file not found: {path}", reason="not_found")
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        raw = _read_pickle(path)
    elif suffix == ".npz":
        raw = load_npz(path)
    else:
        raise DataError(f"{path.name}: unknown features format {suffix!r}; expected .pkl or .npz")
    fs = from_dict(raw, path=path)
    fs.sha256 = file_sha256(path)
    return fs


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f)  # noqa: S301 - only paths the user names (documented)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError,
            MemoryError, OverflowError) as e:  # a corrupt length field asks for an impossible allocation
        raise DataError(f"{path.name}: not a readable features pickle ({type(e).__name__}: {e})") from e
    if not isinstance(raw, dict):
        raise DataError(f"{path.name}: expected a dict of splits, got {type(raw).__name__}")
    return raw


def from_dict(raw: dict[str, Any], path: Path | None = None) -> FeatureSet:
    """Validate an MMSA-schema dict and convert it to a :class:`FeatureSet`."""
    where = f"{path.name}: " if path else ""
    if not isinstance(raw, dict):
        raise DataError(f"{where}expected a dict of splits, got {type(raw).__name__}")
    warnings: list[str] = []
    splits: dict[str, Split] = {}
    for key, value in raw.items():
        if key == STAMP_KEY or not isinstance(value, dict):
            continue
        name = split_name(key)
        if name not in (*SPLITS, ALL_SPLIT):
            warnings.append(f"ignored unknown top-level entry {key!r}")
            continue
        if name in splits:
            raise DataError(f"{where}both {key!r} and 'valid' are present; keep one validation split")
        splits[name] = _split(name, value, where, warnings)
    if not splits:
        raise DataError(f"{where}no splits found; expected keys {', '.join(SPLITS)} (or 'dev'), got {', '.join(map(str, raw)) or 'none'}")
    _check_across(splits, where, warnings)
    stamp = raw.get(STAMP_KEY) if isinstance(raw.get(STAMP_KEY), dict) else {}
    return FeatureSet(splits=splits, specs=specs_from_stamp(stamp), stamp=stamp, path=path, warnings=warnings,
                      class_names=_class_names(splits, stamp, where, warnings))


def _class_names(splits: dict[str, Split], stamp: dict[str, Any], where: str, warnings: list[str]) -> tuple[str, ...]:
    """The stamp's ``classes`` (msa-extract), else "0".."C-1" for files with bare class indices."""
    indices = [s.classes for s in splits.values()]
    if all(c is None for c in indices):
        return ()
    if any(c is None for c in indices):
        warnings.append(f"{where}{CLASS_KEY} ignored: present in some splits but not in all")
        for s in splits.values():
            s.classes = None
        return ()
    top = max(int(c.max()) for c in indices if c is not None)  # type: ignore[union-attr]
    names = stamp.get("classes")
    if names is None:
        return tuple(str(i) for i in range(top + 1))
    if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names) or len(set(names)) != len(names):
        raise DataError(f"{where}config 'classes' must be a list of distinct class names")
    if top >= len(names):
        raise DataError(f"{where}{CLASS_KEY} has index {top}, but only {len(names)} class names are given")
    return tuple(names)


def specs_from_stamp(stamp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Modality -> FeatureSpec dict, from ``stamp["specs"]`` (msa-extract's config stamp)."""
    raw = stamp.get("specs", {}) if isinstance(stamp, dict) else {}
    out: dict[str, dict[str, Any]] = {}
    for modality, spec in (raw or {}).items():
        if isinstance(spec, dict) and spec.get("spec_hash"):
            out[batch_name(modality)] = spec
    return out


def _arr(d: dict[str, Any], key: str) -> np.ndarray | None:
    v = d.get(key)
    return None if v is None else np.asarray(v)


def _split(name: str, d: dict[str, Any], where: str, warnings: list[str]) -> Split:
    here = f"{where}split {name!r}: "
    classes = _classes(d, here, warnings)
    labels = _arr(d, "regression_labels")
    if labels is None and classes is None:
        raise DataError(f"{here}missing 'regression_labels' (keys: {', '.join(map(str, d))})")
    labels = np.full(classes.shape, np.nan, np.float32) if labels is None else (  # type: ignore[union-attr]
        _float(labels, here, "regression_labels").reshape(-1))
    n = labels.shape[0]
    if n == 0:
        raise DataError(f"{here}has no samples")
    if classes is None:  # with class labels, regression labels may be NaN (a regression task refuses them)
        _no_nan_labels(labels, here, "regression_labels")
    elif classes.shape[0] != n:
        raise DataError(f"{here}{CLASS_KEY} has {classes.shape[0]} rows but regression_labels has {n}")
    seqs: dict[str, np.ndarray | None] = {}
    for key in SEQ_KEYS:
        a = _arr(d, key)
        if a is not None:
            a = _float(a, here, key)
            if a.ndim == 2:  # already time-averaged (N, D): one frame
                a = a[:, None, :]
            if a.ndim != 3:
                raise DataError(f"{here}{key} must be (N, T, D), got shape {a.shape}")
            a = _finite(a, here, key, warnings)
        seqs[key] = a
    text_bert = _arr(d, "text_bert")
    if text_bert is not None:
        text_bert = _ids(text_bert, here)
    if seqs["text"] is None and text_bert is None and seqs["audio"] is None and seqs["vision"] is None:
        raise DataError(f"{here}has no features: expected 'text' (or 'text_bert'), 'audio' or 'vision'")
    for key in SEQ_KEYS:  # an absent modality (audio-only extraction, ...) reads as zero-width features
        if seqs[key] is None and not (key == "text" and text_bert is not None):
            seqs[key] = np.zeros((n, 1, 0), np.float32)
            if key != "text":
                d = {**d, f"{key}_lengths": np.ones(n, np.int64)}
    for key, a in (*seqs.items(), ("text_bert", text_bert)):
        if a is not None and a.shape[0] != n:
            raise DataError(f"{here}{key} has {a.shape[0]} rows but regression_labels has {n}")
    unimodal = {}
    for m in UNIMODAL:
        u = _arr(d, f"regression_labels_{m}")
        if u is not None:
            u = _float(u, here, f"regression_labels_{m}").reshape(-1)
            if u.shape[0] != n:
                raise DataError(f"{here}regression_labels_{m} has {u.shape[0]} rows, expected {n}")
            _no_nan_labels(u, here, f"regression_labels_{m}")
            unimodal[m] = u
    lengths = {k: _lengths(d, k, seqs[k], text_bert, here, warnings) for k in ("audio", "vision")}  # type: ignore[arg-type]
    ids = _arr(d, "id")
    ids = ids.astype(str).reshape(-1) if ids is not None and ids.size == n else np.array([f"{name}_{i}" for i in range(n)])
    raw_text = _arr(d, "raw_text")
    raw_text = raw_text.astype(str).reshape(-1) if raw_text is not None and raw_text.size == n else None
    columns = {}
    for key in d:
        if isinstance(key, str) and key.startswith(COLUMN_PREFIX):
            col = np.asarray(d[key]).astype(str).reshape(-1)
            if col.shape[0] != n:
                raise DataError(f"{here}{key} has {col.shape[0]} rows, expected {n}")
            columns[key[len(COLUMN_PREFIX):]] = col
    return Split(name=name, labels=labels, audio=seqs["audio"], audio_lengths=lengths["audio"],  # type: ignore[arg-type]
                 vision=seqs["vision"], vision_lengths=lengths["vision"], text=seqs["text"], text_bert=text_bert,
                 unimodal=unimodal, ids=ids, raw_text=raw_text, classes=classes, columns=columns)


def _classes(d: dict[str, Any], here: str, warnings: list[str]) -> np.ndarray | None:
    """``classification_labels`` as int64 class indices; None when absent or not indices (then ignored, loudly)."""
    a = _arr(d, CLASS_KEY)
    if a is None:
        return None
    try:
        a = np.asarray(a, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        a = np.array([np.nan])
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)) or (a < 0).any():
        warnings.append(f"{here}{CLASS_KEY} ignored: not class indices 0, 1, ...")
        return None
    return a.astype(np.int64)


def _float(a: np.ndarray, here: str, key: str) -> np.ndarray:
    try:
        return np.asarray(a, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{here}{key} is not numeric ({a.dtype})") from e


def _no_nan_labels(labels: np.ndarray, here: str, key: str) -> None:
    bad = ~np.isfinite(labels)
    if bad.any():
        raise DataError(f"{here}{key} has {int(bad.sum())} NaN/inf value(s) (first at row {int(np.argmax(bad))})")


def _finite(a: np.ndarray, here: str, key: str, warnings: list[str]) -> np.ndarray:
    """Non-finite features (MMSA's -inf audio frames, NaN from failed frames) become 0, loudly."""
    bad = ~np.isfinite(a)
    if bad.any():
        a = np.where(bad, np.float32(0), a)
        warnings.append(f"{here}{int(bad.sum())} non-finite value(s) in {key} set to 0")
    return a


def _ids(a: np.ndarray, here: str) -> np.ndarray:
    if a.ndim != 3 or a.shape[1] != 3:
        raise DataError(f"{here}text_bert must be (N, 3, L) ids/mask/types, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{here}text_bert holds non-integer values; expected token ids")
    try:
        return a.astype(np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{here}text_bert is not numeric ({a.dtype})") from e


def _lengths(d: dict[str, Any], key: str, seq: np.ndarray, text_bert: np.ndarray | None, here: str,
             warnings: list[str]) -> np.ndarray:
    """True lengths; derived for aligned files (MMSA: text mask sums; else last non-zero frame)."""
    n, t = seq.shape[:2]
    raw = _arr(d, f"{key}_lengths")
    if raw is None:
        if text_bert is not None and text_bert.shape[2] == t:
            lengths = text_bert[:, 1].sum(axis=1)
            how = "from the text_bert mask (aligned data, as MMSA)"
        else:
            nonzero = np.abs(seq).sum(axis=2) > 0
            lengths = np.where(nonzero.any(axis=1), t - np.argmax(nonzero[:, ::-1], axis=1), 0)
            how = "from the last non-zero frame"
        warnings.append(f"{here}{key}_lengths absent; derived {how}")
    else:
        lengths = np.asarray(raw).reshape(-1)
        if lengths.shape[0] != n:
            raise DataError(f"{here}{key}_lengths has {lengths.shape[0]} entries, expected {n}")
        if not np.all(np.isfinite(lengths.astype(np.float64))):
            raise DataError(f"{here}{key}_lengths has NaN values")
    lengths = lengths.astype(np.int64)
    if (lengths < 0).any():
        raise DataError(f"{here}{key}_lengths has negative values")
    if (lengths > t).any():
        warnings.append(f"{here}{int((lengths > t).sum())} {key}_lengths exceed the padded length {t}; clipped")
    if (lengths == 0).any():
        warnings.append(f"{here}{int((lengths == 0).sum())} sample(s) with empty {key}; length set to 1 (zero frame)")
    return np.clip(lengths, 1, t)


def _check_across(splits: dict[str, Split], where: str, warnings: list[str]) -> None:
    """Feature widths must agree across splits; unequal padded lengths are zero-padded to the longest."""
    first = next(iter(splits.values()))
    for s in splits.values():
        for key in ("text", "audio", "vision"):
            a, b = getattr(first, key), getattr(s, key)
            if (a is None) != (b is None):
                raise DataError(f"{where}{key} is present in split {first.name!r} but not in {s.name!r}")
            if a is not None and (a.shape[2] == 0) != (b.shape[2] == 0):  # zero width = absent modality
                have, lack = (s, first) if a.shape[2] == 0 else (first, s)
                raise DataError(f"{where}{key} is present in split {have.name!r} but not in {lack.name!r}")
            if a is not None and a.shape[2] != b.shape[2]:
                raise DataError(f"{where}{key} width differs across splits: {first.name} {a.shape[2]}, {s.name} {b.shape[2]}")
        if (first.text_bert is None) != (s.text_bert is None):
            raise DataError(f"{where}text_bert is present in split {first.name!r} but not in {s.name!r}")
    for key in ("text", "audio", "vision", "text_bert"):
        arrays = [getattr(s, key) for s in splits.values()]
        if arrays[0] is None:
            continue
        axis = 2 if key == "text_bert" else 1
        longest = max(a.shape[axis] for a in arrays)
        for s in splits.values():
            a = getattr(s, key)
            if a.shape[axis] < longest:
                pad = [(0, 0)] * 3
                pad[axis] = (0, longest - a.shape[axis])
                setattr(s, key, np.pad(a, pad))
                warnings.append(f"{where}split {s.name!r}: {key} zero-padded from {a.shape[axis]} to {longest} steps")


# ---------------------------------------------------------------------------------------------
# tasks

def make_task(dataset: str, fs: FeatureSet | None = None, n_classes: int = 0) -> "Task":
    """The dataset preset's Task; ``custom`` takes its range from the file. Labels must fit the range."""
    from msa.models.base import Task

    if dataset not in DATASETS:
        raise DataError(f"unknown dataset preset {dataset!r}; valid: {', '.join(DATASETS)}", reason="usage")
    p = DATASETS[dataset]
    if p.metrics == "binary":
        raise DataError("the binary preset is a classification task: use --task classification", reason="usage")
    low, high = p.low, p.high
    if low is None or high is None:
        if fs is None:
            raise DataError("the custom preset takes its label range from a features file")
        allv = np.concatenate([s.labels for s in fs.splits.values()])
        low, high = float(allv.min()), float(allv.max())
        if high <= low:
            raise DataError(f"{fs._where()}all labels equal {low}; a regression task needs varying labels")
    task = Task(name=dataset, low=float(low), high=float(high), metrics=p.metrics, n_classes=n_classes)
    if fs is not None:
        check_labels(fs, task)
    return task


def check_labels(fs: FeatureSet, task: "Task", tol: float = 1e-4) -> None:
    """Labels must lie in the task range; PHQ-8 totals that all sit in [0, 1] were scaled, not scored."""
    if task.name == "phq8" and len(fs.splits) > 1 and max(float(s.labels.max()) for s in fs.splits.values()) <= 1.0:
        raise DataError(f"{fs._where()}every PHQ-8 label is <= 1: labels look scaled by 1/25 as in MIMRL; "
                        "store the PHQ-8 total (0..24)")
    for s in fs.splits.values():
        missing = int(np.isnan(s.labels).sum())
        if missing:
            raise DataError(f"{fs._where()}split {s.name!r} has {missing} row(s) without a regression label "
                            "(missing 'regression_labels' or NaN); the file holds class labels: train with "
                            "--task classification")
        lo, hi = float(s.labels.min()), float(s.labels.max())
        if lo < task.low - tol or hi > task.high + tol:
            hint = ""
            if task.name in ("mosi", "mosei") and hi > 3:
                hint = " (PHQ-8 scores? use --dataset phq8; other ranges: --dataset custom)"
            raise DataError(f"{fs._where()}split {s.name!r} labels span [{lo:g}, {hi:g}], outside the "
                            f"{task.name} range [{task.low:g}, {task.high:g}]{hint}")


# ---------------------------------------------------------------------------------------------
# the safe .npz layout: "<split>/<key>" arrays + "__meta__" (JSON: format, config stamp)

def save_npz(data: dict[str, Any], path: str | Path, compress: bool = False) -> Path:
    """Write an MMSA-schema dict as ``.npz`` without pickles (strings become unicode arrays). Atomic."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": NPZ_FORMAT}
    for key, value in data.items():
        if isinstance(value, dict) and key != STAMP_KEY:
            for k, v in value.items():
                if v is None:
                    continue
                a = np.asarray(v)
                if a.dtype == object:
                    a = a.astype(str)
                arrays[f"{key}/{k}"] = a
        else:
            meta[key] = value
    try:
        arrays[NPZ_META] = np.array(json.dumps(meta, default=_json_default))
    except (TypeError, ValueError) as e:
        raise DataError(f"top-level entries must be JSON-serialisable for .npz: {e}") from e
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
    return path


def load_npz(path: str | Path) -> dict[str, Any]:
    """Read :func:`save_npz` output back into the MMSA-schema dict (``allow_pickle=False``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, MemoryError) as e:
        raise DataError(f"{path.name}: not a readable .npz features file ({type(e).__name__}: {e})") from e
    meta: dict[str, Any] = {}
    if NPZ_META in files:
        try:
            meta = json.loads(str(files.pop(NPZ_META)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name}: unreadable {NPZ_META} entry") from e
    out: dict[str, Any] = {k: v for k, v in meta.items() if k != "format"}
    for key, a in files.items():
        split, sep, k = key.partition("/")
        if not sep:
            raise DataError(f"{path.name}: unexpected entry {key!r}; expected '<split>/<key>'")
        out.setdefault(split, {})[k] = a
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
