"""whisper_enc (pooled Whisper encoder states) and egemaps_func (eGeMAPS functionals, per clip / per window)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors.asr import WhisperASR
from msa.extractors.audio import SR, EGeMAPS
from msa.extractors.whisper_enc import WhisperEnc
from msa.extractors.whisper_models import base_dir
from msa.core.errors import ExtractionError
from msa.pipeline.extract.clip_input import Clip

from test_audio import ArrayClip, tone_burst  # tests/extractors is on sys.path (rootdir-relative import)


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> Path:
    return shared_data / "audio" / "one_two_three_en.wav"


def test_speech_clip_gives_one_pooled_row(speech: Path) -> None:
    ex = WhisperEnc()
    spec = ex.spec()
    f = ex.extract(Clip.from_path(speech))
    assert spec.dim == 1024 == f.data.shape[1] == len(spec.columns) and spec.rate is None
    assert f.data.shape[0] == 1 and np.isfinite(f.data).all()
    assert f.meta["voice"] and 0.5 < f.meta["speech_seconds"] <= f.meta["duration"]
    d = spec.dim // 2
    assert (f.data[0, d:] > 0).all()  # the std half of the pooled vector
    assert spec.weights["sha256"] and spec.weights["packages"]


def test_windowed_rows_lie_on_the_clip_timeline(speech: Path) -> None:
    clip = Clip.from_path(speech)
    whole = WhisperEnc().extract(clip)
    win = WhisperEnc(window=1.0).extract(clip)
    assert WhisperEnc(window=1.0).spec().rate == 2.0
    assert win.data.shape[0] >= 2 and win.data.shape[1] == whole.data.shape[1]
    assert np.all(np.diff(win.times) > 0) and win.times[0] >= 0.5 and win.times[-1] <= whole.meta["duration"] + 0.5
    assert not np.allclose(win.data[0], win.data[-1])


def test_no_voice_is_flagged_not_an_error() -> None:
    f = WhisperEnc().extract(ArrayClip(tone_burst(2.0, on=(0.0, 0.0))))  # faint noise only
    assert f.data.shape == (1, 1024) and np.isfinite(f.data).all()
    assert not f.meta["voice"]


def test_too_short_and_bad_audio_fail_cleanly() -> None:
    with pytest.raises(ExtractionError, match="too_short|fewer"):
        WhisperEnc().extract(ArrayClip(np.zeros(100)))
    with pytest.raises(ExtractionError) as e:
        WhisperEnc().extract(ArrayClip(np.full(SR, np.nan)))
    assert e.value.reason == "bad_audio"


@pytest.mark.slow  # base-model ASR and two padded 30 s encodes: ~10 s idle, more on a busy machine
def test_encoder_runs_once_per_clip_with_asr(speech: Path, encode_calls: list) -> None:
    """ASR language detection with the base model and whisper_enc(pad=True) share the encoder output."""
    folder = str(base_dir())
    asr = WhisperASR(model=folder, language="auto")
    enc = WhisperEnc(model=folder, pad=True)
    clip = Clip.from_path(speech)
    transcript = asr.transcribe(clip)
    assert transcript.text.strip() and transcript.language == "en"
    after_asr = len(encode_calls)
    assert after_asr >= 1
    shared = enc.extract(clip)
    assert len(encode_calls) == after_asr  # nothing encoded again

    alone = enc.extract(Clip.from_path(speech))  # a fresh clip: no memo to share
    assert len(encode_calls) == after_asr + 1
    np.testing.assert_allclose(alone.data, shared.data, rtol=1e-5, atol=1e-5)


def test_egemaps_func_whole_clip_equals_egemaps_functionals() -> None:
    clip = ArrayClip(tone_burst(3.0))
    a = EXTRACTORS.get("egemaps_func")().extract(clip)
    b = EGeMAPS(functionals=True).extract(clip)
    assert a.data.shape == (1, 88)
    np.testing.assert_array_equal(a.data, b.data)


def test_egemaps_func_windows() -> None:
    ex = EXTRACTORS.get("egemaps_func")(window=1.0)
    spec = ex.spec()
    f = ex.extract(ArrayClip(tone_burst(3.0, on=(0.0, 1.0))))
    assert spec.dim == 88 and spec.rate == 2.0
    assert f.data.shape == (5, 88)  # windows start at 0, 0.5, 1.0, 1.5, 2.0 s
    np.testing.assert_allclose(f.times, [0.5, 1.0, 1.5, 2.0, 2.5])
    loud = list(spec.columns).index("loudness_sma3_amean")
    assert f.data[0, loud] > f.data[-1, loud]  # the tone is in the first window only
