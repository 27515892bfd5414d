"""``Clip``: one unit of work for the extractors — a media file (probed once) and/or a transcript.

Audio is decoded once per sample rate and cached read-only; frames are streamed on every call so a
long video is never held in memory. A ``text_only`` clip (a label.csv row without media) carries
only its transcript; asking it for audio or frames raises a typed ``MediaError``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from msa.extractors.base import Transcript

from msa.core.errors import MediaError
from msa.pipeline.extract.media import FrameBatch, MediaInfo, iter_frames, load_audio, probe


class Clip:
    """A clip id, its media (``path`` + ``info``, both None for text-only) and optional transcript."""

    def __init__(self, clip_id: str, path: Path | None, info: MediaInfo | None,
                 transcript: Transcript | None = None) -> None:
        self.clip_id = clip_id
        self.path = path
        self.info = info
        self.transcript = transcript
        self._audio: dict[int, np.ndarray] = {}
        self.memo: dict[Any, Any] = {}  # per-clip results extractors share (e.g. Whisper encoder outputs)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], clip_id: str | None = None,
                  transcript: Transcript | str | None = None) -> "Clip":
        """Probe ``path`` (MediaError if unreadable); ``clip_id`` defaults to the file stem."""
        path = Path(path)
        if isinstance(transcript, str):
            transcript = Transcript(text=transcript, source="given")
        return cls(clip_id or path.stem, path, probe(path), transcript)

    @classmethod
    def text_only(cls, clip_id: str, text: str) -> "Clip":
        """A clip known only by its transcript (e.g. a label.csv row with no media file)."""
        return cls(clip_id, None, None, Transcript(text=text, source="label_csv"))

    @property
    def duration(self) -> float | None:
        """Seconds of media; None for a text-only clip or a container without a duration."""
        return self.info.duration if self.info is not None else None

    @property
    def has_audio(self) -> bool:
        return self.info is not None and self.info.has_audio

    @property
    def has_video(self) -> bool:
        return self.info is not None and self.info.has_video

    def audio(self, sr: int = 16000) -> np.ndarray:
        """Mono float32 samples at ``sr`` Hz, decoded on first use and cached (read-only array)."""
        if sr not in self._audio:
            if self.path is None or self.info is None:
                raise MediaError(f"clip {self.clip_id}: text-only clip has no audio", reason="no_audio")
            samples = load_audio(self.path, sr, info=self.info)
            samples.flags.writeable = False
            self._audio[sr] = samples
        return self._audio[sr]

    def frames(self, fps: float | None = None, batch: int = 32, max_side: int | None = None,
               reuse: bool = False) -> Iterator[FrameBatch]:
        """RGB frame batches at ``fps`` (default: the clip's nominal rate), streamed from ffmpeg
        (``reuse``: a batch is overwritten once the next one is asked for; see ``media.iter_frames``)."""
        if self.path is None or self.info is None:
            raise MediaError(f"clip {self.clip_id}: text-only clip has no video", reason="no_video")
        return iter_frames(self.path, fps=fps, batch=batch, max_side=max_side, info=self.info, reuse=reuse)

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "text-only"
        return f"Clip({self.clip_id!r}, {where}, duration={self.duration})"
