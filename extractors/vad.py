"""Silero VAD speech timestamps of a clip's 16 kHz audio, computed once per clip and shared.

Three readers: the recogniser's language detection (the first speech), its transcription (faster-whisper's
``vad_filter`` reproduced on these timestamps) and ``whisper_enc`` (encoder states of the speech). All
three use faster-whisper's default ``VadOptions``, the ones ``WhisperModel.transcribe(vad_filter=True)``
uses, so one run serves them all: :func:`speech_timestamps` memoises it in ``clip.memo``, keyed by the
audio's content.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

SR = 16000  # Silero VAD and Whisper both read 16 kHz


def content_key(arr: np.ndarray) -> tuple[tuple[int, ...], str]:
    """(shape, 128-bit blake2b of the bytes): a memo key for an array's exact content."""
    arr = np.ascontiguousarray(arr)
    return arr.shape, hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()


def speech_timestamps(audio: np.ndarray, memo: dict[Any, Any] | None = None) -> list[dict[str, int]]:
    """Silero VAD's speech chunks (``{"start", "end"}`` in samples) of 16 kHz mono ``audio``, with
    faster-whisper's default options; computed once per ``memo`` (a clip's ``memo``) and audio. Read-only."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if not isinstance(memo, dict):
        return get_speech_timestamps(samples, VadOptions(), sampling_rate=SR)
    key = ("speech_timestamps", *content_key(samples))
    if key not in memo:
        memo[key] = get_speech_timestamps(samples, VadOptions(), sampling_rate=SR)
    return memo[key]


def kept_speech(audio: np.ndarray, chunks: list[dict[str, int]], limit: int | None = None) -> np.ndarray:
    """The ``chunks`` of ``audio`` concatenated: the samples faster-whisper's VAD filter transcribes (its
    ``collect_chunks``, in one copy instead of one per chunk). ``limit``: only the first that many samples,
    without gathering the rest of a long clip."""
    parts, n = [], 0
    for c in chunks:
        if limit is not None and n >= limit:
            break
        parts.append(audio[c["start"] : c["end"]])
        n += c["end"] - c["start"]
    speech = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return speech[:limit].astype(np.float32, copy=False)


def speech_audio(audio: np.ndarray, chunks: list[dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(``kept_speech``, each kept sample's position in ``audio``)."""
    speech = kept_speech(audio, chunks)
    positions = np.concatenate([np.arange(c["start"], c["end"]) for c in chunks]) if chunks else np.zeros(0, int)
    return speech, positions[: speech.size]
