"""msa.pipeline.serve.plot: which rows are drawn from which signals, unit conversions, a valid PNG on disk."""
from __future__ import annotations

import numpy as np
import pytest

from msa.extractors.base import Features
from msa.pipeline.serve.plot import draw, loudness, pitch_hz, plot_prediction
from msa.pipeline.serve.predict import Prediction

FACE_COLS = ("AU06", "AU12", "face")
FER_COLS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "face")
EGEMAPS_COLS = ("Loudness_sma3", "F0semitoneFrom27.5Hz_sma3nz")


def _signal(columns: tuple[str, ...], data: np.ndarray, rate: float) -> tuple[Features, tuple[str, ...]]:
    return Features(data, np.arange(len(data)) / rate), columns


def _prediction(signals: dict, words=(("great", 0.2, 0.6), ("movie", 0.7, 1.1))) -> Prediction:
    return Prediction(clip="/x/clip.mp4", task="sentiment", score=1.7, label="positive", transcript="great movie",
                      transcript_source="asr:whisper", modalities={"text": 1.0}, face_ratio=0.5, speech_seconds=0.8,
                      timings={}, range=(-3.0, 3.0), words=words, duration=2.0, signals=signals)


def _all_signals() -> dict:
    t = np.arange(20)
    face = np.stack([0.1 * np.sin(t), 0.05 * t, (t % 4 != 0).astype(float)], axis=1)
    fer = np.zeros((20, 8))
    fer[:, 3], fer[:, 6], fer[:, 7] = 0.7, 0.3, 1.0
    f0 = np.where(np.arange(200) % 50 < 30, 24.0, 0.0)  # 24 semitones above 27.5 Hz = 110 Hz; 0 = unvoiced
    audio = np.stack([np.linspace(0, 2, 200), f0], axis=1)
    return {"visual": _signal(FACE_COLS, face, 10.0), "audio": _signal(EGEMAPS_COLS, audio, 100.0),
            "fer": _signal(FER_COLS, fer, 10.0)}


def test_pitch_converts_egemaps_semitones_to_hz_and_blanks_unvoiced_frames():
    t, hz = pitch_hz(_all_signals()["audio"])
    assert t.shape == hz.shape == (200,)
    voiced = np.arange(200) % 50 < 30
    np.testing.assert_allclose(hz[voiced], 110.0)
    assert np.isnan(hz[~voiced]).all()


def test_pitch_in_hz_columns_is_passed_through_and_missing_columns_give_none():
    covarep = _signal(("f0", "vuv", "rms_db"), np.array([[120.0, 1, -20], [0.0, 0, -60]]), 100.0)
    t, hz = pitch_hz(covarep)
    assert hz[0] == 120.0 and np.isnan(hz[1])
    assert loudness(covarep)[2] == "RMS (dB)"
    mfcc_only = _signal(("mfcc_0",), np.zeros((3, 1)), 100.0)
    assert pitch_hz(mfcc_only) is None and loudness(mfcc_only) is None
    assert pitch_hz(None) is None


def test_rows_follow_the_available_signals():
    full = _all_signals()
    visual = full["visual"][0]
    both = {"visual": (Features(np.concatenate([visual.data[:, :2], full["fer"][0].data], axis=1), visual.times),
                       ("AU06", "AU12") + FER_COLS),
            "audio": full["audio"]}
    labels = [ax.get_ylabel() for ax in draw(_prediction(both)).axes]
    assert labels[:3] == ["face (AU proxy)", "expression p", "pitch (Hz)"]
    assert "words" in labels and "loudness (sone)" in labels  # loudness on the voice row's twin axis

    audio_only = [ax.get_ylabel() for ax in draw(_prediction({"audio": full["audio"]})).axes]
    assert "face (AU proxy)" not in audio_only and "expression p" not in audio_only
    assert "pitch (Hz)" in audio_only

    bare = draw(_prediction({}, words=()))
    assert [ax.get_ylabel() for ax in bare.axes] == ["text"]  # a given transcript without word times


def test_segments_get_a_score_row_above_the_words():
    pred = _prediction({})
    assert "segment score" not in [ax.get_ylabel() for ax in draw(pred).axes]
    pred.segments = [{"start": 0.2, "end": 0.6, "text": "great", "score": 2.0, "label": "positive"},
                     {"start": 0.7, "end": 1.1, "text": "movie", "score": 1.4, "label": "positive"}]
    axes = draw(pred).axes
    assert [ax.get_ylabel() for ax in axes] == ["segment score", "words"]
    drawn = [list(line.get_ydata()) for line in axes[0].get_lines()]
    assert [2.0, 2.0] in drawn and [1.4, 1.4] in drawn and axes[0].get_ylim() == (-3.0, 3.0)


def test_title_carries_score_label_and_attribution():
    fig = draw(_prediction(_all_signals()))
    title = fig._suptitle.get_text()
    assert "clip.mp4" in title and "positive" in title and "+1.70" in title and "text 1.00" in title


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    out = plot_prediction(_prediction(_all_signals()), tmp_path / "sub" / "p.png")
    assert out == tmp_path / "sub" / "p.png"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300
