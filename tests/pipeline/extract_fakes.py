"""Small, fast, deterministic extractors for testing the extraction job (no models).

Each call appends one line ``<name> <clip_id>`` to ``Config.log`` (when set), so tests can count
exactly what was (re-)extracted, across processes. ``register()`` adds them to the registry so the
real CLI can run them (``--extractors text:fake_text,audio:fake_audio,visual:fake_visual``).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from msa.extractors import EXTRACTORS
from msa.extractors.base import Extractor, Features, Transcript, Word

FAKE_RECIPE = "text:fake_text,audio:fake_audio,visual:fake_visual"


def _log(path: str, name: str, clip: Any) -> None:
    if path:
        with open(path, "a") as f:
            f.write(f"{name} {clip.clip_id}\n")


def calls(path: str | os.PathLike[str]) -> list[str]:
    """Lines written by the fakes so far (empty when nothing ran)."""
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class FakeText(Extractor):
    """One row per whitespace token plus [CLS]/[SEP]; values derived from the token's hash."""

    name, version, modality = "fake_text", "1", "text"

    @dataclass(frozen=True)
    class Config:
        dim: int = 4
        log: str = ""

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return self.config.dim, tuple(f"t{i}" for i in range(self.config.dim)), None

    def extract(self, clip: Any) -> Features:
        _log(self.config.log, self.name, clip)
        tokens = ["[CLS]", *clip.transcript.text.split(), "[SEP]"]
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[: self.config.dim], np.uint8) / 255.0 for t in tokens]
        ids = np.array([int.from_bytes(hashlib.sha256(t.encode()).digest()[:2], "little") for t in tokens])
        text_bert = np.stack([ids, np.ones_like(ids), np.zeros_like(ids)]).astype(np.int64)
        times = np.arange(len(tokens), dtype=float)
        words = clip.transcript.words
        if words and len(words) == len(tokens) - 2:  # like MiniLMText: tokens at word centres, specials at the ends
            times = np.array([words[0].start, *((w.start + w.end) / 2 for w in words), words[-1].end])
        return Features(np.stack(rows), times, extra={"text_bert": text_bert},
                        meta={"empty_transcript": len(tokens) == 2})


class FakeAudio(Extractor):
    """RMS, mean and max-abs of the 16 kHz signal per ``hop`` seconds."""

    name, version, modality = "fake_audio", "1", "audio"

    @dataclass(frozen=True)
    class Config:
        hop: float = 0.1
        log: str = ""
        sleep: float = 0.0  # seconds per clip, to make interruption tests reliable

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return 3, ("rms", "mean", "peak"), 1.0 / self.config.hop

    def extract(self, clip: Any) -> Features:
        _log(self.config.log, self.name, clip)
        time.sleep(self.config.sleep)
        x = np.asarray(clip.audio(16000), dtype=np.float64)
        hop = int(16000 * self.config.hop)
        n = max(1, len(x) // hop)
        frames = x[: n * hop].reshape(n, hop) if len(x) >= hop else x[None, :]
        data = np.stack([np.sqrt((frames**2).mean(1)), frames.mean(1), np.abs(frames).max(1)], axis=1)
        return Features(data, np.arange(n) * self.config.hop)


class FakeVisual(Extractor):
    """Mean RGB of each frame at ``fps``; claims no face (so clips get the no_face flag)."""

    name, version, modality = "fake_visual", "1", "visual"

    @dataclass(frozen=True)
    class Config:
        fps: float = 5.0
        log: str = ""

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return 3, ("r", "g", "b"), self.config.fps

    def extract(self, clip: Any) -> Features:
        _log(self.config.log, self.name, clip)
        rows, times = [], []
        for batch in clip.frames(fps=self.config.fps, max_side=32):
            rows.extend(batch.frames.reshape(len(batch), -1, 3).mean(axis=1) / 255.0)
            times.extend(batch.times)
        return Features(np.array(rows), np.array(times), meta={"face_ratio": 0.0})


class FakeASR(Extractor):
    """'tone tone' for any clip with audio: two words splitting the clip in halves; logs every call."""

    name, version, modality = "fake_asr", "1", "asr"

    @dataclass(frozen=True)
    class Config:
        log: str = ""

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return 3, ("start", "end", "probability"), None

    def transcribe(self, clip: Any) -> Transcript:
        _log(self.config.log, self.name, clip)
        n = len(clip.audio(16000)) / 16000
        return Transcript("tone tone", (Word("tone", 0.0, n / 2), Word("tone", n / 2, n)), source="asr:fake_asr",
                          language="xx")


def register() -> None:
    for cls in (FakeText, FakeAudio, FakeVisual, FakeASR):
        if cls.name not in EXTRACTORS:
            EXTRACTORS.register(cls.name, cls)
