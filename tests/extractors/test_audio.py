"""Audio extractors: the shared 100 Hz grid, shapes, determinism, edge cases, and what the features measure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors.audio import SR, ComParE, CovarepLike, EGeMAPS, MFCC39
from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import ExtractionError

AUDIO = ["covarep_like", "mfcc39", "egemaps", "compare"]


class ArrayClip:
    """Just enough of ``Clip`` for audio extractors: a fixed 16 kHz signal."""

    def __init__(self, y: np.ndarray, clip_id: str = "synthetic") -> None:
        self.y = np.asarray(y, dtype=np.float32)
        self.clip_id = clip_id

    def audio(self, sr: int = SR) -> np.ndarray:
        assert sr == SR
        return self.y


def tone_burst(seconds: float, hz: float = 150.0, on: tuple[float, float] = (1.0, 2.0), seed: int = 0) -> np.ndarray:
    """Silence (+ faint noise) with a harmonic tone at ``hz`` between ``on[0]`` and ``on[1]`` seconds."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * hz * k * t) / k for k in (1, 2, 3))
    gate = (t >= on[0]) & (t < on[1])
    noise = 1e-3 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * tone * gate + noise).astype(np.float32)


@pytest.fixture(scope="module")
def three_s() -> ArrayClip:
    return ArrayClip(tone_burst(3.0))


@pytest.mark.parametrize("name", AUDIO)
def test_shape_grid_and_columns(name: str, three_s: ArrayClip) -> None:
    ex = EXTRACTORS.get(name)()
    spec = ex.spec()
    f = ex.extract(three_s)
    assert f.data.dtype == np.float32 and f.data.ndim == 2
    assert f.data.shape[1] == spec.dim == len(spec.columns) == len(set(spec.columns))
    assert abs(f.data.shape[0] - 3.0 * 100) <= 2
    assert spec.rate == 100.0 and spec.modality == "audio"
    np.testing.assert_allclose(f.times, np.arange(f.data.shape[0]) / 100.0)
    assert np.isfinite(f.data).all() and f.meta["nan_replaced"] == 0
    assert f.data.std(axis=0).max() > 0  # not a constant placeholder


@pytest.mark.parametrize("name", AUDIO)
def test_deterministic_arrays_and_spec(name: str, three_s: ArrayClip) -> None:
    cls = EXTRACTORS.get(name)
    a, b = cls().extract(three_s), cls().extract(three_s)
    np.testing.assert_array_equal(a.data, b.data)
    assert cls().spec().spec_hash == cls().spec().spec_hash


@pytest.mark.parametrize(
    "ex,changed",
    [
        (CovarepLike(), CovarepLike(fmax=500.0)),
        (MFCC39(), MFCC39(lifter=0)),
        (EGeMAPS(), EGeMAPS(functionals=True)),
        (ComParE(), ComParE(deltas=True)),
    ],
)
def test_config_change_changes_spec_hash(ex, changed) -> None:
    assert ex.spec().spec_hash != changed.spec().spec_hash


@pytest.mark.parametrize("name", AUDIO)
def test_too_short_is_a_clear_error_and_one_frame_is_valid(name: str) -> None:
    ex = EXTRACTORS.get(name)()
    with pytest.raises(ExtractionError) as err:
        ex.extract(ArrayClip(np.zeros(100)))
    assert err.value.reason == "too_short" and "10 ms" in err.value.one_line()
    f = ex.extract(ArrayClip(tone_burst(0.012, on=(0.0, 1.0))))  # 192 samples: just over one hop
    assert f.data.shape == (2, ex.spec().dim) and np.isfinite(f.data).all()


@pytest.mark.parametrize("name", AUDIO)
def test_nan_audio_rejected(name: str) -> None:
    y = tone_burst(0.5)
    y[100] = np.nan
    with pytest.raises(ExtractionError) as err:
        EXTRACTORS.get(name)().extract(ArrayClip(y))
    assert err.value.reason == "bad_audio"


@pytest.mark.parametrize("name", AUDIO)
def test_real_clip_from_generated_media(name: str, make_clip) -> None:
    path: Path = make_clip(duration=1.5, video=False, ext="wav", sample_rate=44100)
    f = EXTRACTORS.get(name)().extract(Clip.from_path(path))
    assert abs(f.data.shape[0] - 150) <= 2 and np.isfinite(f.data).all()


def test_covarep_like_measures_pitch_voicing_energy(three_s: ArrayClip) -> None:
    ex = CovarepLike()
    f = ex.extract(three_s)
    col = {c: f.data[:, i] for i, c in enumerate(ex.spec().columns)}
    inside = (f.times > 1.1) & (f.times < 1.9)
    outside = (f.times < 0.8) | (f.times > 2.2)
    assert np.median(col["f0"][inside]) == pytest.approx(150.0, rel=0.03)
    assert col["vuv"][inside].mean() > 0.9 and col["vuv"][outside].mean() < 0.1
    assert (col["f0"][col["vuv"] == 0] == 0).all()
    assert col["rms_db"][inside].mean() > col["rms_db"][outside].mean() + 30
    assert np.median(col["jitter"][inside]) < 0.01  # a steady tone has (almost) no period perturbation
    assert np.median(col["shimmer_db"][inside]) < 0.5
    assert (col["jitter"][col["vuv"] == 0] == 0).all()
    high = ex.extract(ArrayClip(tone_burst(3.0, hz=300.0)))
    centroid = ex.spec().columns.index("spectral_centroid")
    assert high.data[inside, centroid].mean() > f.data[inside, centroid].mean()


def test_mfcc39_deltas_follow_the_onset() -> None:
    ex = MFCC39()
    f = ex.extract(ArrayClip(tone_burst(3.0)))
    cols = ex.spec().columns
    assert cols[:3] == ("mfcc_0", "mfcc_1", "mfcc_2") and cols[13] == "d_mfcc_0" and cols[26] == "dd_mfcc_0"
    d_c0 = f.data[:, cols.index("d_mfcc_0")]
    assert abs(f.times[np.argmax(d_c0)] - 1.0) <= 0.03  # energy rises at the tone onset
    assert abs(f.times[np.argmin(d_c0)] - 2.0) <= 0.03
    steady = (f.times > 1.2) & (f.times < 1.8)
    assert np.abs(d_c0[steady]).max() < 0.1 * d_c0.max()


def test_egemaps_lld_pitch_and_alignment(three_s: ArrayClip) -> None:
    ex = EGeMAPS()
    f = ex.extract(three_s)
    cols = ex.spec().columns
    assert len(cols) == 25 and "Loudness_sma3" in cols
    f0 = f.data[:, cols.index("F0semitoneFrom27.5Hz_sma3nz")]
    inside = (f.times > 1.1) & (f.times < 1.9)
    assert np.median(f0[inside]) == pytest.approx(12 * np.log2(150 / 27.5), abs=0.5)
    loud = f.data[:, cols.index("Loudness_sma3")]
    onset = f.times[np.argmax(loud > 0.5 * loud.max())]
    assert abs(onset - 1.0) <= 0.03  # padded input keeps openSMILE frames on the shared grid


def test_egemaps_functionals_and_nan_replacement(three_s: ArrayClip) -> None:
    ex = EGeMAPS(functionals=True)
    spec = ex.spec()
    f = ex.extract(three_s)
    assert f.data.shape == (1, 88) == (1, spec.dim) and spec.rate is None
    assert "F0semitoneFrom27.5Hz_sma3nz_amean" in spec.columns
    tiny = ex.extract(ArrayClip(tone_burst(0.02, on=(0.0, 1.0))))  # too short for openSMILE's functionals
    assert tiny.meta["nan_replaced"] > 0 and np.isfinite(tiny.data).all()


def test_compare_lld_and_deltas(three_s: ArrayClip) -> None:
    plain, with_d = ComParE().extract(three_s), ComParE(deltas=True).extract(three_s)
    assert plain.data.shape[1] == 65 and with_d.data.shape[1] == 130
    np.testing.assert_array_equal(with_d.data[:, :65], plain.data)
    assert ComParE(deltas=True).spec().columns[65].endswith("_de")


def test_opensmile_extractor_pickles_after_use(three_s: ArrayClip) -> None:
    import pickle

    ex = EGeMAPS()
    first = ex.extract(three_s)  # builds the Smile object
    clone = pickle.loads(pickle.dumps(ex))  # e.g. sent to a worker process
    np.testing.assert_array_equal(clone.extract(three_s).data, first.data)


@pytest.mark.parametrize("cls", [EGeMAPS, lambda: ComParE(deltas=True)], ids=["egemaps", "compare_deltas"])
def test_opensmile_chunks_equal_one_whole_signal_call(cls, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long audio is processed in chunks (bounded memory); the frames equal a single call's exactly.
    ComParE's delta level runs whole (its filters reach past the context), so it adds one call."""
    import msa.extractors.audio as audio

    rng = np.random.default_rng(4)
    speechy = np.concatenate([tone_burst(2.0, hz=120 + 40 * k, on=(0.3, 1.6), seed=k) for k in range(4)])
    clip = ArrayClip(speechy + 0.01 * rng.standard_normal(speechy.size).astype(np.float32))
    whole = cls().extract(clip)  # 8 s: one call at the default chunk size
    monkeypatch.setattr(audio, "_CHUNK_FRAMES", 170)  # 1.7 s chunks, boundaries inside tones and silence
    calls: list[int] = []
    ex = cls()
    for smile in ex._smiles:  # LiteSmile, or opensmile.Smile behind the same ``process``
        monkeypatch.setattr(smile, "process", lambda y, sr, real=smile.process: calls.append(y.size) or real(y, sr))
    chunked = ex.extract(clip)
    assert len(calls) == 5 + (len(ex._smiles) - 1)
    assert max(calls[:5]) == (170 + 2 * 200) * 160 + 960  # a chunk and its context, not the whole signal
    assert chunked.data.shape == whole.data.shape
    np.testing.assert_allclose(chunked.data, whole.data, rtol=1e-5, atol=1e-6)
