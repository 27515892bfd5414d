"""Find what to extract: a folder of media files, one file, or an MMSA dataset (label.csv + Raw/).

Everything about the inputs is checked here, before any extraction starts: a bad label.csv is
reported row by row in one go. Transcript sidecars are located here and parsed on demand
(``read_sidecar``), so an unreadable sidecar fails only its own clip.
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from msa.core.errors import DataError, ExtractionError, UsageError
from msa.core.labels import ID_SEP, SPLITS, split_name
from msa.extractors.base import Word

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".aiff", ".aif")
MEDIA_EXTS = VIDEO_EXTS + AUDIO_EXTS
SIDECAR_EXTS = (".txt", ".srt", ".vtt")
MODES = SPLITS
LABEL_COLUMNS = ("label_T", "label_A", "label_V")
REQUIRED_COLUMNS = ("video_id", "clip_id", "label")  # "label" may be left out when a "class" column is there
CLASS_COLUMN = "class"  # optional class name per clip (classification tasks)
KNOWN_COLUMNS = (*REQUIRED_COLUMNS, *LABEL_COLUMNS, CLASS_COLUMN, "text", "annotation", "mode")


@dataclass(frozen=True)
class Item:
    """One clip to extract, with whatever the dataset says about it."""

    video_id: str
    clip_id: str
    path: Path
    text: str | None = None  # transcript from label.csv (highest precedence)
    label: float | None = None
    label_class: str | None = None  # class name from label.csv's "class" column
    sub_labels: dict[str, float] = field(default_factory=dict)  # T/A/V -> value (SIMS)
    annotation: str = ""
    mode: str | None = None  # train | valid | test, None for a plain folder
    columns: tuple[tuple[str, str], ...] = ()  # label.csv's other columns (e.g. speaker), for group splits
    transcript_file: Path | None = None  # a transcript given for this clip (msa-predict --transcript)

    @property
    def id(self) -> str:
        return f"{self.video_id}{ID_SEP}{self.clip_id}"

    @property
    def sidecar(self) -> Path | None:
        """The given transcript file, else the first ``<clip>.txt|.srt|.vtt`` next to the clip, if any."""
        if self.transcript_file is not None:
            return self.transcript_file
        for ext in SIDECAR_EXTS:
            p = self.path.with_suffix(ext)
            if p.is_file():
                return p
        return None


@dataclass(frozen=True)
class Source:
    """The discovered inputs: items in a stable order, and whether they carry labels and modes."""

    root: Path
    items: tuple[Item, ...]
    kind: str  # "dataset" | "folder" | "file"
    sub_label_keys: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()  # sorted names of label.csv's "class" column, when it has one
    extra_columns: tuple[str, ...] = ()  # label.csv columns msa does not interpret, kept per clip

    @property
    def has_modes(self) -> bool:
        return any(it.mode for it in self.items)


class LabelCsvError(DataError):
    """label.csv problems, all rows at once. ``problems`` holds one line per bad row."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        shown = "; ".join(problems[:12])
        more = f"; ... and {len(problems) - 12} more" if len(problems) > 12 else ""
        super().__init__(f"{path} has {len(problems)} problem(s): {shown}{more}", reason="bad_label_csv")
        self.path = path
        self.problems = problems


def discover(input_path: str | Path) -> Source:
    """Dispatch on what ``input_path`` is: a dataset folder with label.csv, a folder, or one file."""
    root = Path(input_path)
    if not root.exists():
        raise UsageError(f"input not found: {root}")
    if root.is_file():
        if root.name == "label.csv":
            return load_dataset(root.parent)
        if root.suffix.lower() not in MEDIA_EXTS:
            raise UsageError(f"{root}: not a media file (expected one of {', '.join(MEDIA_EXTS)}) or label.csv")
        return Source(root.parent, (Item(root.parent.name or ".", root.stem, root),), "file")
    if (root / "label.csv").is_file():
        return load_dataset(root)
    return scan_folder(root)


def scan_folder(root: Path) -> Source:
    """All media files under ``root`` (recursive, symlinks followed once, loops skipped), sorted."""
    files: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unreadable_folder):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop or a second link to a seen folder
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames.sort()
        # a folder named like a clip (x.mp4/) is listed too: it fails as a clip, visibly, not silently
        for name in sorted(filenames + [d for d in dirnames if Path(d).suffix.lower() in MEDIA_EXTS]):
            p = Path(dirpath) / name
            if p.suffix.lower() in MEDIA_EXTS and not name.startswith("."):
                files.append(p)
    if not files:
        raise UsageError(f"no media files under {root} (looked for {', '.join(MEDIA_EXTS)})")
    items: list[Item] = []
    stems: dict[tuple[str, str], int] = {}
    for p in files:
        key = (_video_id(root, p), p.stem)
        stems[key] = stems.get(key, 0) + 1
    for p in files:
        video_id = _video_id(root, p)
        clip_id = p.stem if stems[(video_id, p.stem)] == 1 else p.name  # a.mp4 + a.wav: keep both apart
        items.append(Item(video_id, clip_id, p))
    return Source(root, tuple(items), "folder")


def _unreadable_folder(e: OSError) -> None:
    """os.walk skips a folder it cannot list; say so before extraction instead of losing its clips."""
    raise UsageError(f"cannot read folder {e.filename} ({e.strerror or e}); fix its permissions or move it out of "
                     "the input", reason="permission_denied") from e


def _video_id(root: Path, p: Path) -> str:
    rel = p.parent.relative_to(root).as_posix()
    return root.resolve().name if rel == "." else rel


def read_label_csv(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a label.csv: UTF-8 (BOM allowed), header names stripped. The one reader, for
    msa-extract's datasets and msa-eval's text-only label.csv alike."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
            return list(reader.fieldnames), list(reader)
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_path} is not UTF-8 text ({e.reason} at byte {e.start})", reason="bad_label_csv") from e
    except csv.Error as e:
        raise DataError(f"{csv_path} is not a readable CSV: {e}", reason="bad_label_csv") from e


def row_mode(row: dict[str, str]) -> str:
    """The row's split, canonical (``dev``/``val`` -> ``valid``); "" when the column is absent or empty."""
    return split_name((row.get("mode") or "").strip())


def load_dataset(root: Path) -> Source:
    """Read and validate ``root/label.csv``; clips live at ``root/Raw/<video_id>/<clip_id>.<ext>``."""
    csv_path = root / "label.csv"
    header, rows = read_label_csv(csv_path)
    has_class = CLASS_COLUMN in header
    missing = [c for c in REQUIRED_COLUMNS if c not in header and not (c == "label" and has_class)]
    if missing:
        raise LabelCsvError(csv_path, [f"missing column(s) {', '.join(missing)} (have: {', '.join(header)})"])
    if not rows:
        raise LabelCsvError(csv_path, ["no rows"])
    sub_keys = tuple(c for c in LABEL_COLUMNS if c in header and any((r.get(c) or "").strip() for r in rows))
    extra = tuple(c for c in header if c and c not in KNOWN_COLUMNS)
    problems: list[str] = []
    items: list[Item] = []
    first_line: dict[tuple[str, str], int] = {}
    media_index = _media_index(root / "Raw")
    for i, row in enumerate(rows):
        line = i + 2  # header is line 1
        errs: list[str] = []
        vid, cid = (row.get("video_id") or "").strip(), (row.get("clip_id") or "").strip()
        if not vid or not cid:
            errs.append("empty video_id or clip_id")
        elif (vid, cid) in first_line:
            errs.append(f"duplicate id {vid}{ID_SEP}{cid} (first on line {first_line[(vid, cid)]})")
        else:
            first_line[(vid, cid)] = line
        raw_label = (row.get("label") or "").strip()
        label = _number(raw_label)
        if label is None and (raw_label or not has_class):  # with a class column the label may be empty
            errs.append(f"label is not a number: {row.get('label')!r}")
        label_class = (row.get(CLASS_COLUMN) or "").strip() if has_class else None
        if has_class and not label_class:
            errs.append("empty class")
        subs: dict[str, float] = {}
        for key in sub_keys:
            value = _number(row.get(key))
            if value is None:
                errs.append(f"{key} is not a number: {row.get(key)!r}")
            else:
                subs[key[-1]] = value
        mode = row_mode(row) if "mode" in header else None
        if mode is not None and mode not in MODES:
            errs.append(f"unknown mode {row.get('mode')!r} (expected {', '.join(MODES)}; dev/val mean valid)")
        media = media_index.get((vid, cid)) if vid and cid else None
        if vid and cid and media is None:
            errs.append(f"no media at Raw/{vid}/{cid}.<{'|'.join(e[1:] for e in MEDIA_EXTS)}>")
        if errs:
            problems.append(f"line {line}: {', '.join(errs)}")
            continue
        text = row.get("text")
        items.append(
            Item(vid, cid, media, text=text if text and text.strip() else None, label=label,  # type: ignore[arg-type]
                 label_class=label_class, sub_labels=subs, annotation=(row.get("annotation") or "").strip(),
                 mode=mode or None, columns=tuple((c, (row.get(c) or "").strip()) for c in extra))
        )
    if problems:
        raise LabelCsvError(csv_path, problems)
    classes = tuple(sorted({it.label_class for it in items if it.label_class}))
    return Source(root, tuple(items), "dataset", tuple(k[-1] for k in sub_keys), classes, extra)


def _media_index(raw: Path) -> dict[tuple[str, str], Path]:
    """(video_id, clip_id) -> media path under Raw/, preferring video extensions in MEDIA_EXTS order."""
    index: dict[tuple[str, str], Path] = {}
    if not raw.is_dir():
        return index
    rank = {e: i for i, e in enumerate(MEDIA_EXTS)}
    for video_dir in sorted(p for p in raw.iterdir() if p.is_dir()):
        for p in sorted(video_dir.iterdir(), key=lambda q: (q.stem, rank.get(q.suffix.lower(), 99))):
            if p.suffix.lower() in rank and (video_dir.name, p.stem) not in index:
                index[(video_dir.name, p.stem)] = p
    return index


def _number(value: str | None) -> float | None:
    try:
        x = float((value or "").strip())
    except ValueError:
        return None
    return None if math.isnan(x) or math.isinf(x) else x


# --- transcripts -------------------------------------------------------------------------------

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")


def read_sidecar(path: Path) -> tuple[str, tuple[Word, ...]]:
    """Text of a .txt/.srt/.vtt transcript, and a subtitle's word times (:func:`subtitle_words`); a clear
    per-clip error when empty or not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ExtractionError(f"cannot read transcript {path}: {e.strerror}", reason="bad_transcript") from e
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ExtractionError(
            f"transcript {path} is not UTF-8 (byte {e.start}); re-save it as UTF-8", reason="bad_transcript"
        ) from e
    if path.suffix.lower() in (".srt", ".vtt"):
        words = subtitle_words(content)
        text = " ".join(w.word for w in words)
    else:
        words, text = (), " ".join(content.split())
    if not text:
        raise ExtractionError(f"transcript {path} is empty", reason="empty_transcript")
    return text, words


def subtitle_suffix(content: str) -> str:
    """The file suffix a transcript's text reads as: ``.vtt`` or ``.srt`` when it has cue timings, else ``.txt``."""
    if not any(_TIMING.match(ln) for ln in content.splitlines()):
        return ".txt"
    return ".vtt" if content.lstrip("\ufeff").lstrip().startswith("WEBVTT") else ".srt"


def subtitle_words(content: str) -> tuple[Word, ...]:
    """The words of an SRT or WebVTT file's cues (no numbers, timings, tags or notes), each timed by its
    share of its cue: a cue's span is shared out over its words in proportion to their length in
    characters, an approximation (subtitles time lines, not words)."""
    words: list[Word] = []
    for block in re.split(r"\n\s*\n", content.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        head = lines[0].strip()
        if head.startswith(("WEBVTT", "NOTE", "STYLE", "REGION")):
            continue
        timing = next((i for i, ln in enumerate(lines) if _TIMING.match(ln)), None)
        if timing is None:
            continue  # not a cue (stray header text)
        span = _TIMING.match(lines[timing]).groups()  # type: ignore[union-attr]
        start, end = _seconds(span[:4]), _seconds(span[4:])
        cue = [w for ln in lines[timing + 1:] for w in _TAG.sub("", ln).split()]
        edges = [0, *itertools.accumulate(len(w) for w in cue)]
        step = max(end - start, 0.0) / max(edges[-1], 1)
        words.extend(Word(w, round(start + step * a, 3), round(start + step * b, 3))
                     for w, a, b in zip(cue, edges, edges[1:]))
    return tuple(words)


def _seconds(parts: tuple[str | None, ...]) -> float:
    """``(hours or None, minutes, seconds, milliseconds)`` of a cue timing -> seconds."""
    h, m, s, ms = parts
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000
