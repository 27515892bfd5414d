"""Frame-level acoustic features at 100 Hz from the clip's 16 kHz mono signal.

All extractors here share one time grid: frame ``i`` is centred on ``i * 10 ms`` and a signal of
``N`` samples gives ``1 + N // 160`` frames (librosa's ``center=True`` convention); openSMILE input is
zero-padded so its frames land on the same grid. Output is float32, NaN-free (NaNs become 0 and
``meta["nan_replaced"]`` counts them) and deterministic. Formulas: docs/extractors_audio_text.md.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from typing import Annotated, Any, Iterator

import numpy as np

from msa.core.config import Checked, Count, NonNegative, Positive, Size, matching
from msa.core.errors import ExtractionError
from msa.core.packages import shipped_files_status

from .base import Extractor, Features

OddWidth = Annotated[int, matching(lambda v: v >= 3 and v % 2 == 1, "an odd integer >= 3")]  # librosa.delta

SR = 16000
HOP = 160  # 10 ms
RATE = SR / HOP
N_FFT = 512
WIN = 400  # 25 ms analysis window


def load_signal(clip: Any, name: str) -> np.ndarray:
    """The clip's 16 kHz mono signal, checked: finite and at least one hop (10 ms) long."""
    y = np.ascontiguousarray(clip.audio(SR), dtype=np.float32).reshape(-1)
    cid = getattr(clip, "clip_id", "?")
    if y.size < HOP:
        raise ExtractionError(
            f"{name}: clip {cid} has {y.size} audio samples, fewer than one 10 ms frame ({HOP} at {SR} Hz)",
            reason="too_short",
        )
    if not np.all(np.isfinite(y)):
        raise ExtractionError(f"{name}: clip {cid} has NaN/inf audio samples", reason="bad_audio")
    return y


@contextlib.contextmanager
def short_input_ok() -> Iterator[None]:
    """librosa warns when a clip is shorter than its FFT; the zero-padded output is still well defined."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        yield


def n_frames(n_samples: int) -> int:
    return 1 + n_samples // HOP


def frame_times(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / RATE


def finish(data: np.ndarray, times: np.ndarray, n_samples: int, **meta: Any) -> Features:
    """float32, NaN/inf -> 0 with the count recorded."""
    data = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad:
        data = np.where(bad, np.float32(0), data)
    return Features(data=data, times=times, meta={"nan_replaced": n_bad, "duration": n_samples / SR, **meta})


# ----------------------------------------------------------------------------- librosa-based


def _mfcc_names(prefix: str = "") -> list[str]:
    return [f"{prefix}mfcc_{i}" for i in range(13)]


COVAREP_COLUMNS: tuple[str, ...] = (
    "f0", "vuv", "voicing_prob", "rms_db", *_mfcc_names(),
    "spectral_tilt", "spectral_centroid", "spectral_flux", "zcr", "jitter", "shimmer_db",
)  # fmt: skip


class CovarepLike(Extractor):
    """A documented COVAREP stand-in: F0/voicing (pYIN), energy, MFCC, spectral shape, ZCR, jitter/shimmer."""

    name = "covarep_like"
    version = "1"
    modality = "audio"
    packages = ("librosa",)
    plot_signals = {"pitch": (("f0", "hz"),), "loudness": (("rms_db", "RMS (dB)"),)}

    @dataclass(frozen=True)
    class Config(Checked):
        fmin: Positive = 60.0  # F0 search range, Hz (adult speech)
        fmax: Positive = 400.0
        f0_resolution: Positive = 0.2  # pYIN pitch-bin width in semitones (librosa default 0.1; 0.2 is ~2x faster)
        f0_thresholds: Size = 25  # pYIN threshold count (librosa default 100)

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return len(COVAREP_COLUMNS), COVAREP_COLUMNS, RATE

    def extract(self, clip: Any) -> Features:
        import librosa

        y = load_signal(clip, self.name)
        c = self.config
        t = n_frames(y.size)
        with short_input_ok():
            f0, vuv, vprob = librosa.pyin(
                y, fmin=c.fmin, fmax=c.fmax, sr=SR, frame_length=1024, hop_length=HOP,
                resolution=c.f0_resolution, n_thresholds=c.f0_thresholds, center=True, pad_mode="constant",
            )  # fmt: skip
        f0 = np.where(vuv, np.nan_to_num(f0), 0.0)[:t]
        vuv = vuv.astype(np.float64)[:t]
        vprob = np.nan_to_num(vprob)[:t]

        with short_input_ok():
            stft = librosa.stft(y, n_fft=N_FFT, hop_length=HOP, win_length=WIN, center=True, pad_mode="constant")
        mag = np.abs(stft)
        power = mag**2
        frames = _frames(y)
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
        rms_db = 20.0 * np.log10(np.maximum(rms, 1e-5))
        mel = librosa.feature.melspectrogram(S=power, sr=SR, n_mels=40, fmax=SR / 2)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None), n_mfcc=13)
        freqs = librosa.fft_frequencies(sr=SR, n_fft=N_FFT)
        peak = np.max(np.abs(frames), axis=1)
        cols = [
            f0, vuv, vprob, rms_db, *mfcc[:, :t],
            _spectral_tilt(power, freqs),
            librosa.feature.spectral_centroid(S=mag, freq=freqs)[0],
            _spectral_flux(mag),
            librosa.feature.zero_crossing_rate(y, frame_length=WIN, hop_length=HOP, center=True)[0],
            _jitter(f0, vuv), _shimmer_db(peak, vuv),
        ]  # fmt: skip
        data = np.stack([np.asarray(col[:t], dtype=np.float64) for col in cols], axis=1)
        return finish(data, frame_times(t), y.size, voiced_ratio=float(vuv.mean()))


def _frames(y: np.ndarray) -> np.ndarray:
    """(T, WIN) windows centred on each 10 ms hop, zero-padded at the edges."""
    import librosa

    padded = np.pad(y, (WIN // 2, WIN // 2))
    return librosa.util.frame(padded, frame_length=WIN, hop_length=HOP, axis=0)[: n_frames(y.size)]


def _spectral_tilt(power: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Least-squares slope of the dB power spectrum against frequency in kHz (dB/kHz), per frame."""
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    x = freqs / 1000.0 - np.mean(freqs / 1000.0)
    return (x @ (db - db.mean(axis=0, keepdims=True))) / float(x @ x)


def _spectral_flux(mag: np.ndarray) -> np.ndarray:
    """L2 distance between consecutive L1-normalised magnitude spectra (0 for the first frame)."""
    norm = mag / np.maximum(mag.sum(axis=0, keepdims=True), 1e-10)
    flux = np.zeros(mag.shape[1])
    flux[1:] = np.sqrt(np.sum(np.diff(norm, axis=1) ** 2, axis=0))
    return flux


def _pairs_voiced(vuv: np.ndarray) -> np.ndarray:
    both = np.zeros(vuv.shape, dtype=bool)
    both[1:] = (vuv[1:] > 0) & (vuv[:-1] > 0)
    return both


def _jitter(f0: np.ndarray, vuv: np.ndarray) -> np.ndarray:
    """|T_t - T_{t-1}| / mean(T_t, T_{t-1}) with T = 1/F0, for consecutive voiced frames, else 0."""
    both = _pairs_voiced(vuv)
    period = 1.0 / np.where(f0 > 0, f0, 1.0)
    out = np.zeros_like(f0)
    prev = np.roll(period, 1)
    out[both] = np.abs(period[both] - prev[both]) / ((period[both] + prev[both]) / 2.0)
    return out


def _shimmer_db(peak: np.ndarray, vuv: np.ndarray) -> np.ndarray:
    """|20 log10(A_t / A_{t-1})| with A the frame's peak amplitude, for consecutive voiced frames, else 0."""
    both = _pairs_voiced(vuv)
    a = np.maximum(peak.astype(np.float64), 1e-5)
    out = np.zeros_like(a)
    out[both] = np.abs(20.0 * np.log10(a[both] / np.roll(a, 1)[both]))
    return out


MFCC39_COLUMNS: tuple[str, ...] = (*_mfcc_names(), *_mfcc_names("d_"), *_mfcc_names("dd_"))


class MFCC39(Extractor):
    """13 MFCC (c0..c12) + delta + delta-delta at 100 Hz, the AVEC2019 baseline's openSMILE-style setting:
    pre-emphasis 0.97, 25 ms Hamming window, 26 HTK mel bands, cepstral lifter 22, delta window 2."""

    name = "mfcc39"
    version = "1"
    modality = "audio"
    packages = ("librosa",)

    @dataclass(frozen=True)
    class Config(Checked):
        n_mels: Size = 26
        lifter: Count = 22
        delta_width: OddWidth = 5  # frames in the regression window (openSMILE W=2 -> 5)

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return len(MFCC39_COLUMNS), MFCC39_COLUMNS, RATE

    def extract(self, clip: Any) -> Features:
        import librosa

        y = load_signal(clip, self.name)
        c = self.config
        t = n_frames(y.size)
        emph = np.append(y[:1], y[1:] - 0.97 * y[:-1])
        with short_input_ok():
            mel = librosa.feature.melspectrogram(
                y=emph, sr=SR, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window="hamming", center=True,
                pad_mode="constant", n_mels=c.n_mels, fmin=0.0, fmax=SR / 2, htk=True, power=2.0,
            )  # fmt: skip
        mfcc = librosa.feature.mfcc(
            S=librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None), n_mfcc=13, lifter=c.lifter
        )[:, :t]
        d1 = librosa.feature.delta(mfcc, width=c.delta_width, order=1, mode="nearest")
        d2 = librosa.feature.delta(d1, width=c.delta_width, order=1, mode="nearest")  # delta of delta, as HTK
        return finish(np.concatenate([mfcc, d1, d2]).T, frame_times(t), y.size)


# ----------------------------------------------------------------------------- openSMILE

# openSMILE frame i covers [i*10 ms, i*10 ms + window) of its input. Zero-padding 20 ms in front centres
# the 20/25 ms windows (energy, spectra, MFCC) 10 ms before and the 60 ms windows (F0, jitter, shimmer,
# HNR) 10 ms after i * 10 ms; 40 ms more at the end lets the last 60 ms window fit.
_PAD_FRONT = 320
_PAD_BACK = 640
# Low-level descriptors are computed in chunks of 60 s with 2 s of context either side, so openSMILE's
# buffers (which grow with the input) stay bounded on long recordings; the output equals one whole-signal
# call frame for frame (tests/extractors/test_audio.py checks it), so the chunking is not part of the spec.
# ComParE's deltas are the exception (their filters reach further back): that level runs whole.
_CHUNK_FRAMES = 6000
_CONTEXT_FRAMES = 200


class _FramesOf:
    """``opensmile.Smile`` with ``LiteSmile``'s interface: ``process`` gives the (frames, features) array."""

    def __init__(self, smile: Any) -> None:
        self._smile = smile
        self.feature_names = smile.feature_names

    def process(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        return self._smile.process_signal(signal, sampling_rate).to_numpy()


class _OpenSmile(Extractor):
    """openSMILE through its Python API on the in-memory signal; one Smile object per extractor instance."""

    modality = "audio"
    version = "1"
    packages = ("opensmile",)

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        return shipped_files_status("opensmile", "core/config", ("egemaps/v02/eGeMAPSv02.conf", "compare/ComParE_2016.conf"),
                                    "openSMILE configs", "pip install opensmile")
    feature_set: str  # opensmile.FeatureSet member name

    def _levels(self) -> tuple[str, ...]:
        """opensmile.FeatureLevel member names whose outputs are concatenated column-wise."""
        raise NotImplementedError

    @functools.cached_property
    def _smiles(self) -> list[Any]:
        """One runner per level: ``LiteSmile`` (openSMILE without the ``opensmile`` package's pandas layer,
        same values), else ``opensmile.Smile``."""
        from .smile_lite import lite_smile

        lite = [lite_smile(self.feature_set, lv) for lv in self._levels()]
        if all(s is not None for s in lite):
            return lite
        import opensmile
        from audobject.core import utils as audobject_utils

        # Building a Smile makes audobject ask which distribution provides module "opensmile"; its
        # answer, importlib.metadata.packages_distributions(), reads the file list of every installed
        # distribution (about half a CPU second here). Seed audobject's cache with that one answer.
        audobject_utils.PACKAGES_DISTRIBUTIONS.setdefault("opensmile", ["opensmile"])
        fs = getattr(opensmile.FeatureSet, self.feature_set)
        levels = [getattr(opensmile.FeatureLevel, lv) for lv in self._levels()]
        return [_FramesOf(opensmile.Smile(feature_set=fs, feature_level=lv)) for lv in levels]

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for process pools: the Smile objects are rebuilt on first use."""
        return {k: v for k, v in self.__dict__.items() if k != "_smiles"}

    def weights_identity(self) -> dict[str, Any]:
        return {"package": "opensmile", "version": version("opensmile"), "feature_set": self.feature_set}

    def preload(self) -> None:
        self._smiles  # noqa: B018 - the library and config names; each call builds and frees its own instance

    def _functionals(self) -> bool:
        return self._levels() == ("Functionals",)

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        cols = tuple(name for s in self._smiles for name in s.feature_names)
        return len(cols), cols, None if self._functionals() else RATE

    def extract(self, clip: Any) -> Features:
        y = load_signal(clip, self.name)
        if self._functionals():
            return self._windowed_functionals(y, float(getattr(self.config, "window", 0.0)))
        padded = np.concatenate([np.zeros(_PAD_FRONT, np.float32), y, np.zeros(_PAD_BACK, np.float32)])
        t = n_frames(y.size)
        parts = [self._lld(s, padded, t, _CHUNK_FRAMES if level != "LowLevelDescriptors_Deltas" else t)
                 for s, level in zip(self._smiles, self._levels(), strict=True)]
        return finish(np.concatenate(parts, axis=1), frame_times(t), y.size, level="lld")

    def _windowed_functionals(self, y: np.ndarray, window: float) -> Features:
        """One functionals row for the clip (window 0), or one per ``window`` seconds with hop ``window / 2``."""
        if window <= 0:
            return finish(self._smiles[0].process(y, SR), np.array([y.size / SR / 2]), y.size, level="functionals")
        size, hop = int(round(window * SR)), int(round(window * SR / 2))
        starts = range(0, max(y.size - hop, 1), hop)
        rows = [self._smiles[0].process(y[a : a + size], SR)[0] for a in starts]
        times = np.array([(a + min(size, y.size - a) / 2) / SR for a in starts])
        return finish(np.stack(rows), times, y.size, level="functionals", window=window)

    def _lld(self, smile: Any, padded: np.ndarray, t: int, chunk: int) -> np.ndarray:
        """Frames 0..t-1 of one Smile over the padded signal, ``chunk`` frames per call."""
        rows = []
        for f0 in range(0, t, chunk):
            f1 = min(t, f0 + chunk)
            a, b = max(0, f0 - _CONTEXT_FRAMES), min(t, f1 + _CONTEXT_FRAMES)
            part = smile.process(padded[a * HOP : b * HOP + _PAD_FRONT + _PAD_BACK], SR)
            rows.append(part[f0 - a : f1 - a])
            if rows[-1].shape[0] != f1 - f0:
                raise ExtractionError(f"{self.name}: openSMILE returned {part.shape[0]} frames for frames "
                                      f"{a}..{b - 1}, expected {b - a}", reason="frame_count")
        return np.concatenate(rows)


class EGeMAPS(_OpenSmile):
    """eGeMAPSv02: 25 low-level descriptors per 10 ms frame, or (functionals=True) its 88 functionals as one row."""

    name = "egemaps"
    plot_signals = {"pitch": (("F0semitoneFrom27.5Hz_sma3nz", "semitones"),),
                    "loudness": (("Loudness_sma3", "loudness (sone)"),)}
    feature_set = "eGeMAPSv02"

    @dataclass(frozen=True)
    class Config(Checked):
        functionals: bool = False

    def _levels(self) -> tuple[str, ...]:
        return ("Functionals",) if self.config.functionals else ("LowLevelDescriptors",)


class EGeMAPSFunctionals(_OpenSmile):
    """eGeMAPSv02's 88 functionals: one row per clip, or (window > 0) per ``window`` seconds, hop ``window / 2``."""

    name = "egemaps_func"
    feature_set = "eGeMAPSv02"

    @dataclass(frozen=True)
    class Config(Checked):
        window: NonNegative = 0.0  # seconds; 0: one row for the whole clip

    def _levels(self) -> tuple[str, ...]:
        return ("Functionals",)

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        dim, cols, _ = super().describe()
        return dim, cols, (2.0 / self.config.window if self.config.window > 0 else None)


class ComParE(_OpenSmile):
    """ComParE_2016: 65 low-level descriptors per 10 ms frame (+65 deltas with deltas=True)."""

    name = "compare"
    plot_signals = {"pitch": (("F0final_sm", "hz"),),
                    "loudness": (("pcm_RMSenergy_sma", "RMS energy"), ("audspec_lengthL1norm_sma", "loudness"))}
    feature_set = "ComParE_2016"

    @dataclass(frozen=True)
    class Config(Checked):
        deltas: bool = False

    def _levels(self) -> tuple[str, ...]:
        lld = ("LowLevelDescriptors",)
        return (*lld, "LowLevelDescriptors_Deltas") if self.config.deltas else lld
