"""Voice and face affect readouts for ``msa-predict``: reported beside the sentiment score, never fused into it.

* **voice**: the shipped voice-affect bundle (``checkpoints/voice_affect``, trained with msa-train on
  RAVDESS) on the clip's pooled Whisper encoder states (``whisper_enc``, rebuilt from the bundle's
  spec): class probabilities, and valence/arousal as the probability-weighted mean of
  :data:`VOICE_VA`. ``None`` when the clip has no audio or Silero VAD finds under 0.25 s of speech.
* **face**: fer's seven expression probabilities (``fer_emotion``) averaged over the sampled frames
  with a face, and valence from :data:`FACE_VALENCE`. ``None`` without video or without a face.

Both come with a timeline for the plot: voice per 2 s window (hop 1 s), face per 1 s window.
No jointly labelled data (sentiment and affect on the same clips) exists here to validate a fusion,
so the readouts stay separate from the sentiment score.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msa.checkpoints import shipped_bundle

log = logging.getLogger("msa.affect")
VOICE_BUNDLE = shipped_bundle("voice_affect")
VOICE_WINDOW = 2.0  # seconds per voice timeline row (hop 1 s)
FACE_WINDOW = 1.0  # seconds per face timeline row
# (valence, arousal) per RAVDESS class: positions on Russell's circumplex, rounded to tenths
# (neutral at the origin; calm low-arousal positive; surprise positive high-arousal).
VOICE_VA = {
    "neutral": (0.0, 0.0), "calm": (0.3, -0.6), "happy": (0.8, 0.5), "sad": (-0.7, -0.5),
    "angry": (-0.6, 0.8), "fearful": (-0.6, 0.6), "disgust": (-0.7, 0.3), "surprised": (0.3, 0.7),
}  # fmt: skip
# valence per fer expression, same scale
FACE_VALENCE = {"angry": -0.6, "disgust": -0.7, "fear": -0.6, "happy": 0.8, "sad": -0.7, "surprise": 0.3,
                "neutral": 0.0}


def pooled_probs(bundle: Any, rows: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(N, C) class probabilities of a loaded audio-only bundle for N pooled rows, normalised as in training."""
    import torch

    x = np.asarray(rows, dtype=np.float32)
    stats = bundle.norm.get("audio")
    if stats:
        x = (x - np.asarray(stats["mean"], np.float32)) / np.asarray(stats["std"], np.float32)
    batch = {"audio": torch.from_numpy(np.ascontiguousarray(x[:, None, :])).to(device),
             "audio_lengths": torch.ones(len(x), dtype=torch.long, device=device)}
    with torch.inference_mode():
        out = bundle.model(batch)
    return out["probs"].float().cpu().numpy()


@dataclass
class Timeline:
    """Class probabilities over time: ``probs`` (T, C) at window centres ``times`` (T,)."""

    times: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]


@dataclass
class Affect:
    """The readouts of one clip (``None`` = nothing to read) and their timelines for the plot."""

    voice: dict[str, Any] | None = None
    face: dict[str, Any] | None = None
    voice_timeline: Timeline | None = None
    face_timeline: Timeline | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.voice is None and self.face is None


def weighted(probs: dict[str, float], table: dict[str, Any], index: int | None = None) -> float:
    """Probability-weighted mean of ``table`` over the classes it knows, in [-1, 1]."""
    num = den = 0.0
    for name, p in probs.items():
        if name in table:
            v = table[name] if index is None else table[name][index]
            num, den = num + p * v, den + p
    return round(num / den, 4) if den > 0 else 0.0


class VoiceReader:
    """The voice-affect bundle and its ``whisper_enc`` extractor (whole clip and windowed)."""

    def __init__(self, bundle: Path = VOICE_BUNDLE, device: str = "cpu") -> None:
        from msa.pipeline.serve.predict import extractor_from_spec
        from msa.pipeline.train.bundle import load_bundle, read_meta

        meta = read_meta(bundle)
        spec = ((meta.get("features") or {}).get("audio") or {}).get("spec")
        self.extractor = extractor_from_spec(spec, "audio", bundle)
        if self.extractor.name != "whisper_enc":
            from msa.core.errors import BundleError

            raise BundleError(f"{bundle}: a voice-affect bundle reads whisper_enc features, not {self.extractor.name}")
        self.windowed = type(self.extractor)(dataclasses.replace(self.extractor.config, window=VOICE_WINDOW))
        self.bundle = load_bundle(bundle, current_specs={"audio": self.extractor.spec().to_dict()}, device=device)
        self.classes = tuple(self.bundle.task.classes)
        self.device = device

    def probs(self, rows: np.ndarray) -> np.ndarray:
        return pooled_probs(self.bundle, rows, self.device)

    def read(self, clip: Any) -> tuple[dict[str, Any] | None, Timeline | None]:
        whole = self.extractor.extract(clip)
        if not whole.meta.get("voice"):
            return None, None
        p = self.probs(whole.data)[0]
        emotions = {c: round(float(v), 4) for c, v in zip(self.classes, p, strict=True)}
        voice = {"emotions": emotions, "valence": weighted(emotions, VOICE_VA, 0),
                 "arousal": weighted(emotions, VOICE_VA, 1)}
        win = self.windowed.extract(clip)  # same clip: the encoder output is reused (clip.memo)
        timeline = Timeline(win.times, self.probs(win.data), self.classes) if len(win.data) else None
        return voice, timeline


class FaceReader:
    """fer's expression probabilities over the frames with a face."""

    def __init__(self) -> None:
        from msa.extractors.fer import FerEmotion

        self.extractor = FerEmotion()

    def read(self, clip: Any) -> tuple[dict[str, Any] | None, Timeline | None]:
        from msa.extractors.fer import EMOTIONS

        feats = self.extractor.extract(clip)
        face = feats.data[:, -1] > 0
        if not face.any():
            return None, None
        probs = feats.data[face, : len(EMOTIONS)].astype(np.float64)
        mean = probs.mean(axis=0)
        expressions = {e: round(float(v), 4) for e, v in zip(EMOTIONS, mean / mean.sum(), strict=True)}
        times = feats.times[face]
        edges = np.arange(0.0, float(times.max()) + FACE_WINDOW, FACE_WINDOW)
        rows, centres = [], []
        for t0 in edges:
            sel = (times >= t0) & (times < t0 + FACE_WINDOW)
            if sel.any():
                rows.append(probs[sel].mean(axis=0))
                centres.append(t0 + FACE_WINDOW / 2)
        timeline = Timeline(np.asarray(centres), np.asarray(rows), EMOTIONS)
        return {"expressions": expressions, "valence": weighted(expressions, FACE_VALENCE)}, timeline


class AffectReader:
    """Voice and face readouts of one clip (each skipped when its stream is missing)."""

    def __init__(self, voice_bundle: Path | None = VOICE_BUNDLE, face: bool = True, device: str = "cpu") -> None:
        self.voice = VoiceReader(voice_bundle, device) if voice_bundle is not None else None
        self.face = FaceReader() if face else None
        self._lock = threading.Lock()  # msa-serve's workers share one reader; fer's interpreter is not thread-safe

    def read(self, path: Path, clip: Any = None) -> Affect:
        """Both readouts of the clip at ``path``, one clip at a time per reader. ``clip``: the same file
        already opened (msa-predict passes the extraction stages' clip, so its audio is decoded once)."""
        from msa.pipeline.extract.clip_input import Clip

        if clip is not None and Path(clip.path) != Path(path):
            raise ValueError(f"clip {clip.path} is not {path}")
        with self._lock:
            return self._read(clip if clip is not None else Clip.from_path(path))

    def _read(self, clip: Any) -> Affect:
        from msa.core.errors import ExtractionError, MissingBackendError

        out = Affect()
        for what, reader, present in (("voice", self.voice, clip.has_audio), ("face", self.face, clip.has_video)):
            if reader is None or not present:
                continue
            t0 = time.perf_counter()
            try:
                readout, timeline = reader.read(clip)
            except ExtractionError:  # e.g. audio shorter than one encoder frame: no readout, not a failed clip
                readout, timeline = None, None
            except MissingBackendError as e:  # e.g. fer not installed (a plain wheel install): say so, go on
                log.warning("msa: no %s readout: %s", what, e.one_line())
                readout, timeline = None, None
            setattr(out, what, readout)
            setattr(out, f"{what}_timeline", timeline)
            out.seconds[what] = round(time.perf_counter() - t0, 3)
        return out


def describe(voice: dict[str, Any] | None, face: dict[str, Any] | None) -> list[str]:
    """Text lines for msa-predict's human output."""
    lines = []
    for what, r, key in (("voice emotion", voice, "emotions"), ("face expression", face, "expressions")):
        if r is None:
            lines.append(f"  {what}: none")
            continue
        top = sorted(r[key].items(), key=lambda kv: -kv[1])[:3]
        extra = f", arousal {r['arousal']:+.2f}" if "arousal" in r else ""
        ranked = ", ".join(f"{c} {p:.2f}" for c, p in top)
        lines.append(f"  {what}: {ranked} (valence {r['valence']:+.2f}{extra})")
    return lines


def plot_rows(affect: Affect | None) -> list[tuple[str, Timeline]]:
    """(row label, timeline) for the plot: a voice-emotion row and a face-expression row when present."""
    if affect is None:
        return []
    return [(label, t) for label, t in (("voice emotion p", affect.voice_timeline),
                                        ("face expression p", affect.face_timeline)) if t is not None]


def draw_row(ax: Any, label: str, timeline: Timeline) -> None:
    """Stacked class probabilities over time, the strongest classes in the legend."""
    order = np.argsort(-timeline.probs.mean(axis=0))
    times, probs = timeline.times, timeline.probs[:, order]
    if len(times) == 1:  # one window: a flat band around it
        times, probs = np.array([times[0] - 0.5, times[0] + 0.5]), np.repeat(probs, 2, axis=0)
    ax.stackplot(times, probs.T, labels=[timeline.classes[i] for i in order], alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_ylabel(label)
    ax.legend(loc="upper right", fontsize=7, ncol=4)
