"""msa.pipeline.serve.predict and msa-predict on generated clips with small fake extractors and tiny bundles.

The real extractors and the default bundle are exercised in tests/e2e/test_predict_e2e.py.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from msa.core.labels import THREE_CLASS_NAMES, three_classes

import extract_fakes
from extract_fakes import FakeAudio, FakeText, FakeVisual, calls
from msa.models.base import Dims, Task
from msa.pipeline.cli.extract import main as extract_main
from msa.pipeline.cli.predict import main as predict_main, parse_signals
from msa.core.errors import BundleError, UsageError
from msa.pipeline.serve.predict import (PredictOptions, Predictor, extractor_from_spec, label_for, phq8_band,
                                  plot_paths, resolve_bundle, sentiment_label, union_seconds)

MOSI = Task("mosi", -3.0, 3.0, "mosi")
DIMS = Dims(text=4, audio=3, vision=3, text_len=8, audio_len=30, vision_len=12)
NORM = {"audio": {"mean": [0.1, 0.0, 0.2], "std": [0.5, 0.1, 0.5]},
        "vision": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}}
FAKES = ("--signals", "none", "--asr", "fake_asr", "--no-affect")


@pytest.fixture(autouse=True, scope="module")
def _fakes() -> None:
    extract_fakes.register()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_specs(log: Path) -> dict[str, dict]:
    return {"text": FakeText(log=str(log)).spec().to_dict(), "audio": FakeAudio(log=str(log)).spec().to_dict(),
            "vision": FakeVisual(log=str(log)).spec().to_dict()}


def save_lmf_bundle(out: Path, log: Path, dims: Dims = DIMS, task: Task = MOSI) -> Path:
    import torch

    from msa.models import MODELS, build_config
    from msa.pipeline.train.bundle import save_bundle

    torch.manual_seed(0)
    cfg = build_config("lmf", "mosi", "tiny")
    model = MODELS.get("lmf")(cfg, dims, task)
    return save_bundle(out, model, model_name="lmf", config=cfg, task=task, dims=dims, specs=fake_specs(log), norm=NORM)


@pytest.fixture
def clip_dir(tmp_path: Path, av_clip: Path) -> Path:
    d = tmp_path / "clips"
    d.mkdir()
    shutil.copy(av_clip, d / "talk.mp4")
    (d / "talk.txt").write_text("what a great day\n")
    return d


# --- labels, bands, helpers ---------------------------------------------------------------------

@pytest.mark.parametrize("score,label", [(-3.0, "negative"), (-0.51, "negative"), (-0.5, "neutral"), (0.0, "neutral"),
                                         (0.5, "neutral"), (0.51, "positive"), (3.0, "positive")])
def test_mosi_sentiment_label_has_a_half_point_neutral_band(score, label):
    assert sentiment_label(score, MOSI) == label


def test_sims_and_custom_ranges_use_their_own_neutral_band():
    sims = Task("sims", -1.0, 1.0, "sims")
    scores = (-0.2, -0.1, -0.0999, 0.05, 0.1, 0.11)
    labels = [sentiment_label(s, sims) for s in scores]
    assert labels == ["negative", "negative", "neutral", "neutral", "neutral", "positive"]
    # one definition: predict, the SIMS metrics and CLIP-CA-MSA's classes agree at the edges
    assert labels == [THREE_CLASS_NAMES[c] for c in three_classes(scores)]
    custom = Task("custom", 0.0, 12.0, "regression")  # centre 6, band 1
    assert [sentiment_label(s, custom) for s in (4.9, 5.5, 6.9, 7.1)] == ["negative", "neutral", "neutral", "positive"]


@pytest.mark.parametrize("score,band", [(0.0, "none"), (4.49, "none"), (4.5, "mild"), (9.4, "mild"), (10, "moderate"),
                                        (14.2, "moderate"), (15, "moderately severe"), (19.49, "moderately severe"),
                                        (19.5, "severe"), (24.0, "severe")])
def test_phq8_bands_follow_the_rounded_total(score, band):
    assert phq8_band(score) == band
    assert label_for(score, Task("phq8", 0.0, 24.0, "phq8")) == band


def test_union_seconds_merges_overlapping_word_spans():
    assert union_seconds([]) == 0.0
    assert union_seconds([(0.0, 1.0), (0.5, 1.5), (2.0, 2.5), (2.1, 2.2)]) == pytest.approx(2.0)


def test_plot_paths_one_per_clip():
    assert plot_paths("out/p.png", ["a/x.mp4"]) == [Path("out/p.png")]
    assert plot_paths("out/p.png", ["a/x.mp4", "b/y.wav", "c/x.mp4"]) == \
        [Path("out/p_x.png"), Path("out/p_y.png"), Path("out/p_x_2.png")]


def test_parse_signals():
    assert parse_signals("none") == ()
    assert parse_signals("audio:covarep_like") == (("audio", "covarep_like"),)
    with pytest.raises(UsageError, match="audio:NAME"):
        parse_signals("text:minilm")
    with pytest.raises(UsageError, match="valid names"):
        parse_signals("visual:nope")


def test_phq8_without_a_bundle_says_how_to_train_one(tmp_path, monkeypatch):
    import msa.pipeline.serve.predict as predict

    monkeypatch.setitem(predict.DEFAULT_BUNDLES, "phq8", tmp_path / "none")
    with pytest.raises(UsageError) as e:
        resolve_bundle(None, "phq8")
    assert e.value.exit_code == 2
    assert "--recipe avec2019" in str(e.value) and "--dataset phq8" in str(e.value)
    assert resolve_bundle(tmp_path, "phq8") == tmp_path  # an explicit bundle is checked when loaded


# --- bundle checks -------------------------------------------------------------------------------

def test_extractor_from_spec_rebuilds_the_recorded_config(tmp_path):
    spec = FakeAudio(hop=0.05).spec().to_dict()
    ext = extractor_from_spec(spec, "audio", tmp_path)
    assert isinstance(ext, FakeAudio) and ext.config.hop == 0.05


def test_extractor_spec_mismatch_is_a_bundle_error(tmp_path):
    spec = FakeAudio().spec().to_dict()
    with pytest.raises(BundleError, match="trained on 0123456789abcdef"):
        extractor_from_spec({**spec, "spec_hash": "0123456789abcdef"}, "audio", tmp_path)
    with pytest.raises(BundleError, match="unknown to this msa"):
        extractor_from_spec({**spec, "name": "gone"}, "audio", tmp_path)
    with pytest.raises(BundleError, match="records no audio feature spec"):
        extractor_from_spec(None, "audio", tmp_path)


def test_cli_refuses_a_bundle_whose_extractor_changed(tmp_path, clip_dir, capsys):
    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["features"]["audio"]["spec"]["version"] = "0"  # trained with an older fake_audio
    meta["features"]["audio"]["spec_hash"] = meta["features"]["audio"]["spec"]["spec_hash"] = "feedfacefeedface"
    (bundle / "bundle.json").write_text(json.dumps(meta))
    rc = predict_main([str(clip_dir / "talk.mp4"), "--bundle", str(bundle), *FAKES])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("msa-predict: error:") and "audio extractor fake_audio" in err[0]


def test_task_must_match_the_bundle(tmp_path, clip_dir, capsys):
    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log")
    rc = predict_main([str(clip_dir / "talk.mp4"), "--bundle", str(bundle), "--task", "phq8", *FAKES])
    err = capsys.readouterr().err
    assert rc == 2 and "is a sentiment bundle" in err and "msa-train" in err


# --- prediction ----------------------------------------------------------------------------------

def test_multimodal_prediction_matches_the_training_path(tmp_path, clip_dir):
    """Score == the bundle's model on msa-extract's features file (same padding and normalisation),
    and --cache reuses msa-extract's cache without extracting again."""
    import torch

    from msa.pipeline.train.data import from_dict
    from msa.pipeline.train.loader import SplitDataset

    log = tmp_path / "log"
    bundle = save_lmf_bundle(tmp_path / "b", log)
    feats = tmp_path / "feats"
    sets = [f"--set={m}.log={log}" for m in ("text", "audio", "visual")]
    assert extract_main([str(clip_dir), "--out", str(feats), "--extractors", f"{extract_fakes.FAKE_RECIPE},asr:fake_asr",
                         "--max-len", "text=8,audio=30,vision=12", "--quiet", *sets]) == 0
    extracted = len(calls(log))
    raw = pickle.loads((feats / "features.pkl").read_bytes())
    split = raw["all"]
    split["regression_labels"] = np.zeros(1, dtype=np.float32)
    # a training file's length is set by its longest clip: zero padding up to the bundle's lengths
    for key, axis, size in (("text", 1, 8), ("text_bert", 2, 8), ("audio", 1, 30), ("vision", 1, 12)):
        assert split[key].shape[axis] < size  # this clip is shorter: the padding path is exercised
        pad = [(0, 0)] * 3
        pad[axis] = (0, size - split[key].shape[axis])
        split[key] = np.pad(split[key], pad)
    ds = SplitDataset(from_dict(raw).split("all"), NORM)
    options = PredictOptions(bundle=bundle, cache_dir=feats, signals=(), asr="fake_asr", affect=False)
    with Predictor(options) as p:
        with torch.inference_mode():
            expected = float(p.bundle.model(ds.__getitems__([0]))["pred"][0])
        pred = p.predict(clip_dir / "talk.mp4")
    assert len(calls(log)) == extracted  # every stage came from the cache
    assert pred.score == pytest.approx(float(np.clip(expected, -3, 3)), abs=1e-6)
    assert pred.transcript == "what a great day" and pred.transcript_source == "sidecar"
    assert pred.label == label_for(pred.score, MOSI)
    assert set(pred.modalities) == {"text", "audio", "vision"}
    assert sum(pred.modalities.values()) == pytest.approx(1.0, abs=1e-3)
    assert pred.face_ratio == 0.0  # the fake visual extractor never finds a face
    assert {"model", "total"} <= set(pred.timings) and "text" not in pred.timings  # nothing was extracted


def test_attribution_follows_the_modality_that_moves_the_score(tmp_path, clip_dir):
    """Make the audio/vision factors constant: only occluding text changes the score."""
    import torch
    from safetensors.torch import load_file, save_file

    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log")
    w = load_file(str(bundle / "weights.safetensors"))
    for k in ("audio_factor", "video_factor"):
        w[k] = torch.zeros_like(w[k])
        w[k][:, 0] = 1.0  # picks the constant 1 that LMF prepends to h_m: blind to this modality
    save_file(w, str(bundle / "weights.safetensors"), metadata={"format": "pt"})
    meta = json.loads((bundle / "bundle.json").read_text())
    from msa.core.hashing import file_sha256

    meta["weights"]["sha256"] = file_sha256(bundle / "weights.safetensors")
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with Predictor(PredictOptions(bundle=bundle, signals=(), asr="fake_asr", affect=False)) as p:
        pred = p.predict(clip_dir / "talk.mp4")
    assert pred.modalities["text"] == pytest.approx(1.0, abs=1e-3)
    assert pred.modalities["audio"] == pytest.approx(0.0, abs=1e-3)


def test_text_only_bundle_still_reports_signals(tmp_path, clip_dir):
    """A text-only bundle scores the transcript alone ({"text": 1.0}) while the signal extractors run."""
    import torch

    from msa.extractors.text import MiniLMText
    from msa.models import MODELS, build_config
    from msa.pipeline.train.bundle import save_bundle

    torch.manual_seed(0)
    cfg = build_config("text_regressor", "mosi", "tiny")
    dims = Dims(text=0, audio=1, vision=1, text_len=16, audio_len=1, vision_len=1)  # ids only, as the default
    model = MODELS.get("text_regressor")(cfg, dims, MOSI)
    bundle = save_bundle(tmp_path / "t", model, model_name="text_regressor", config=cfg, task=MOSI, dims=dims,
                         specs={"text": MiniLMText().spec().to_dict()})
    transcript = tmp_path / "given.srt"
    transcript.write_text("1\n00:00:00,000 --> 00:00:01,000\nnot good <i>at all</i>\n")
    options = PredictOptions(bundle=bundle, signals=(("audio", "fake_audio"), ("visual", "fake_visual")),
                             asr="fake_asr", affect=False)
    with Predictor(options) as p:
        a = p.predict(clip_dir / "talk.mp4", transcript_file=transcript)
        b = p.predict(clip_dir / "talk.mp4")  # the sidecar this time
    assert a.modalities == {"text": 1.0} and a.transcript == "not good at all" and a.transcript_source == "given"
    assert b.transcript == "what a great day" and a.score != b.score
    assert a.face_ratio == 0.0 and set(a.signals) == {"audio", "visual"}
    assert {"transcript", "text", "audio", "visual", "model", "total"} <= set(a.timings)
    assert a.speech_seconds == 1.0 and "vad" not in a.timings  # the subtitle's cue-timed words span 1 s
    assert b.speech_seconds is not None and "vad" in b.timings  # a .txt sidecar has no word times: Silero VAD
    assert not a.truncated and not any(f.endswith("_truncated") for f in a.flags)
    # a transcript longer than the bundle's 16 tokens: scored on its start, and the result says so
    long_text = "the plot was slow but the acting was wonderful and the music carried every scene to the end"
    (tmp_path / "long.txt").write_text(long_text + "\n")
    with Predictor(options) as p:
        c = p.predict(clip_dir / "talk.mp4", transcript_file=tmp_path / "long.txt")
    from msa.extractors.base import Transcript

    n_tokens = MiniLMText().encode(Transcript(long_text)).meta["n_tokens"]  # with [CLS] and [SEP]
    assert n_tokens > 16 and c.truncated == {"text": [16, n_tokens]} and "text_truncated" in c.flags
    assert c.to_json()["truncated"] == {"text": [16, n_tokens]} and "truncated" not in a.to_json()


def test_feature_sequences_longer_than_the_bundle_reads_are_reported(tmp_path, clip_dir, capsys):
    """A clip whose audio frames outnumber the bundle's trained length is scored on its start: the JSON's
    ``truncated`` and ``flags`` and the text output say how much was read."""
    import dataclasses

    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log", dims=dataclasses.replace(DIMS, audio_len=2))
    assert predict_main([str(clip_dir / "talk.mp4"), "--bundle", str(bundle), "--json", *FAKES]) == 0
    r = json.loads(capsys.readouterr().out)
    read, of = r["truncated"]["audio"]
    assert read == 2 and of > 2 and set(r["truncated"]) == {"audio"} and "audio_truncated" in r["flags"]
    assert predict_main([str(clip_dir / "talk.mp4"), "--bundle", str(bundle), *FAKES]) == 0
    assert f"read only the start: audio 2 of {of} frames" in capsys.readouterr().out
    full = save_lmf_bundle(tmp_path / "full", tmp_path / "log")  # trained lengths the clip fits in
    assert predict_main([str(clip_dir / "talk.mp4"), "--bundle", str(full), "--json", *FAKES]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "truncated" not in r and not any(f.endswith("_truncated") for f in r["flags"])


@pytest.fixture
def bare_clip(tmp_path: Path, av_clip: Path) -> Path:
    """The 2 s clip without a sidecar: fake_asr gives two words, one per second."""
    d = tmp_path / "bare"
    d.mkdir()
    return Path(shutil.copy(av_clip, d / "talk.mp4"))


def test_segments_score_runs_of_words_and_give_their_weighted_mean(tmp_path, bare_clip):
    """--segments: one run covering the clip scores as the whole clip does; two runs get their own words
    and half the audio frames each, and the clip's score is their mean."""
    import dataclasses

    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log", dims=dataclasses.replace(DIMS, audio_len=5))
    base = {"bundle": bundle, "signals": (), "asr": "fake_asr", "affect": False}
    runs = {}
    for seconds in (0.0, 100.0, 0.5):
        with Predictor(PredictOptions(**base, segments=seconds)) as p:
            runs[seconds] = p.predict(bare_clip)
    whole, one, two = runs[0.0], runs[100.0], runs[0.5]
    assert whole.segments is None and "segments" not in whole.to_json()
    assert len(one.segments) == 1 and one.score == pytest.approx(whole.score, abs=1e-6)
    assert one.segments[0]["text"] == "tone tone" and one.modalities == pytest.approx(whole.modalities, abs=1e-3)
    assert [s["text"] for s in two.segments] == ["tone", "tone"] and two.segments[0]["start"] == 0.0
    assert two.segments[0]["end"] == pytest.approx(1.0, abs=0.05) == two.segments[1]["start"]
    assert two.score == pytest.approx(np.mean([s["score"] for s in two.segments]), abs=1e-4)
    assert two.label == label_for(two.score, MOSI) and two.to_json()["segments"] == two.segments
    # 20 audio frames (0.1 s hop) shared out at 1 s: each run has 10 and the bundle reads 5 of them
    assert [s["truncated"] for s in two.segments] == [{"audio": [5, 10]}] * 2
    assert two.truncated == {"audio": [10, 20]} and whole.truncated == {"audio": [5, 20]}


def test_segments_are_scored_a_few_at_a_time_with_the_same_result(tmp_path, bare_clip, monkeypatch):
    from msa.pipeline.serve import predict

    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log")
    options = PredictOptions(bundle=bundle, signals=(), asr="fake_asr", affect=False, segments=0.5)
    with Predictor(options) as p:
        together = p.predict(bare_clip)
        monkeypatch.setattr(predict, "FORWARD_CHUNK", 1)  # one run per forward pass
        apart = p.predict(bare_clip)
    assert apart.segments == together.segments and len(apart.segments) == 2
    assert apart.score == pytest.approx(together.score, abs=1e-6)
    assert apart.modalities == pytest.approx(together.modalities, abs=1e-4)


def test_segments_of_a_classification_bundle_average_the_class_probabilities(tmp_path, bare_clip):
    classes = Task("mood", 0.0, 2.0, "classification", n_classes=3, classes=("low", "mid", "high"))
    bundle = save_lmf_bundle(tmp_path / "c", tmp_path / "log", task=classes)
    with Predictor(PredictOptions(bundle=bundle, signals=(), asr="fake_asr", affect=False, segments=0.5)) as p:
        r = p.predict(bare_clip)
        runs = [p._forward(*_one_run(p, bare_clip, i))[1] for i in range(2)]
    mean = (runs[0] + runs[1]) / 2
    assert r.probabilities == pytest.approx({c: float(v) for c, v in zip(classes.classes, mean)}, abs=1e-4)
    assert r.label == classes.classes[int(np.argmax(mean))] and r.score == pytest.approx(float(mean.max()), abs=1e-6)
    assert [s["label"] for s in r.segments] == [classes.classes[int(np.argmax(x))] for x in runs]
    for seg, x in zip(r.segments, runs):
        assert seg["probabilities"] == pytest.approx(dict(zip(classes.classes, x.tolist())), abs=1e-4)
        assert seg["score"] == pytest.approx(float(x.max()), abs=1e-4)


def _one_run(p: Predictor, clip: Path, i: int) -> tuple[object, object]:
    """Run ``i`` of the clip at 0.5 s as an entry of its own (for an independent forward pass)."""
    from msa.pipeline.extract.cache import FeatureCache
    from msa.pipeline.extract.runner import run_clip
    from msa.pipeline.extract.sources import Item
    from msa.pipeline.serve.segments import segment_entries, split_words

    rec = run_clip(0, Item(clip.parent.name, clip.stem, clip, text=None, label=0.0), p.plan, wait=True)
    cache = FeatureCache(p.plan.out_dir)
    feats = {m: cache.load(*ref) for m, ref in rec.entry.refs.items()}
    entries, mem = segment_entries(rec.entry, feats, split_words(rec.entry.words, 0.5), p.used, p.text_extractor)
    return [entries[i]], mem


def test_segments_refusals_are_one_line_errors(tmp_path, clip_dir, bare_clip, capsys):
    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log")
    # a sidecar transcript has no word times: that clip fails, the other is scored
    rc = predict_main([str(clip_dir / "talk.mp4"), str(bare_clip), "--bundle", str(bundle), "--segments", "0.5",
                       "--json", *FAKES])
    out, err = capsys.readouterr()
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "the sidecar transcript has none" in err
    assert len(json.loads(out)["segments"]) == 2
    t = tmp_path / "t.txt"
    t.write_text("hello")
    for extra in (["--segments", "-1"], ["--segments", "nan"]):
        assert predict_main([str(bare_clip), "--bundle", str(bundle), *extra, *FAKES]) == 2
        assert "--segments" in capsys.readouterr().err
    assert predict_main([str(bare_clip), "--bundle", str(bundle), "--segments", "5", "--transcript", str(t), *FAKES]) == 1
    assert "the given transcript has none" in capsys.readouterr().err
    from types import SimpleNamespace

    from msa.core.errors import MsaError

    with Predictor(PredictOptions(bundle=bundle, signals=(), asr="fake_asr", affect=False, segments=5.0)) as p:
        with pytest.raises(MsaError, match="no speech was recognised") as e:  # e.g. an audio-only bundle
            p._score_segments(bare_clip, "asr:fake_asr", SimpleNamespace(words=(), transcript=""), {}, 5.0)
    assert e.value.reason == "no_word_timings"
    phq8 = save_lmf_bundle(tmp_path / "p", tmp_path / "log", task=Task("phq8", 0.0, 24.0, "phq8"))
    assert predict_main([str(bare_clip), "--bundle", str(phq8), "--segments", "5", *FAKES]) == 2
    assert "whole session" in capsys.readouterr().err


def test_segments_follow_a_subtitle_files_cues(tmp_path, bare_clip, capsys):
    """A .srt sidecar or --transcript times its words by its cues, so --segments cuts it without ASR."""
    srt = bare_clip.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,900\nwhat a day.\n\n2\n00:00:01,100 --> 00:00:02,000\nso dull\n")
    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log")
    assert predict_main([str(bare_clip), "--bundle", str(bundle), "--segments", "0.5", "--json", *FAKES]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["transcript_source"] == "sidecar" and r["transcript"] == "what a day. so dull"
    assert [(s["start"], s["end"], s["text"]) for s in r["segments"]] == [(0.0, 0.9, "what a day."), (1.1, 2.0, "so dull")]
    given = tmp_path / "given.vtt"
    given.write_text("WEBVTT\n\n00:00.000 --> 00:02.000\nall of it\n")
    srt.unlink()
    assert predict_main([str(bare_clip), "--bundle", str(bundle), "--segments", "30", "--transcript", str(given),
                         "--json", *FAKES]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["transcript_source"] == "given" and [s["text"] for s in r["segments"]] == ["all of it"]


def test_segments_in_the_text_output(tmp_path, bare_clip, capsys):
    import dataclasses

    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log", dims=dataclasses.replace(DIMS, audio_len=5))
    assert predict_main([str(bare_clip), "--bundle", str(bundle), "--segments", "0.5", *FAKES]) == 0
    out = capsys.readouterr().out
    assert "segments (2; the score is their mean, weighted by length):" in out
    assert "read only the start of 2 segments: audio 10 of 20 frames" in out
    assert out.count("(start only)  'tone'") == 2


def test_cli_json_lines_and_bad_clips(tmp_path, clip_dir, capsys, bad_media):
    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "log")
    clips = [str(bad_media["random_bytes"]), str(clip_dir / "talk.mp4"), str(tmp_path / "missing.mp4")]
    rc = predict_main([*clips, "--bundle", str(bundle), "--json", "--plot", str(tmp_path / "p.png"), *FAKES])
    out, err = capsys.readouterr()
    assert rc == 1
    errors = err.strip().splitlines()
    assert len(errors) == 2 and clips[0] in errors[0] and clips[2] in errors[1]
    lines = [json.loads(x) for x in out.strip().splitlines()]
    assert len(lines) == 1
    r = lines[0]
    assert {"clip", "task", "score", "label", "transcript", "modalities", "face_ratio", "speech_seconds",
            "timings"} <= set(r)
    assert r["clip"] == clips[1] and r["task"] == "sentiment" and -3 <= r["score"] <= 3
    assert Path(r["plot"]).name == "p_talk.png" and Path(r["plot"]).is_file()


def test_cli_transcript_takes_one_clip(tmp_path, clip_dir, capsys):
    t = tmp_path / "t.txt"
    t.write_text("hello")
    rc = predict_main([str(clip_dir / "talk.mp4"), str(clip_dir / "talk.mp4"), "--transcript", str(t)])
    assert rc == 2 and "one CLIP" in capsys.readouterr().err


def test_affect_readouts_reuse_the_clip_the_extraction_decoded(tmp_path, clip_dir, monkeypatch):
    """msa-predict decodes a clip's audio once: the voice readout reads the extraction stages' Clip
    (its cached samples) instead of opening the file again; with every feature cached it decodes once too."""
    from msa.pipeline.extract import clip_input
    from msa.pipeline.serve.affect import AffectReader

    decodes: list[str] = []
    real = clip_input.load_audio

    def counting(path, *args, **kwargs):
        decodes.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(clip_input, "load_audio", counting)

    class Voice:  # reads the samples as the whisper_enc readout does
        def read(self, clip):
            n = clip.audio(16000).size
            return {"emotions": {"happy": 1.0}, "valence": 0.8, "arousal": 0.5, "samples": n}, None

    bundle = save_lmf_bundle(tmp_path / "b", tmp_path / "calls.log")
    with Predictor(PredictOptions(bundle=bundle, signals=(), asr="fake_asr", affect=False)) as p:
        p.affect = AffectReader(voice_bundle=None, face=False)
        p.affect.voice = Voice()
        first = p.predict(clip_dir / "talk.mp4")
        assert len(decodes) == 1 and first.affect.voice["samples"] > 0
        second = p.predict(clip_dir / "talk.mp4")  # features cached: only the readout needs the audio
    assert len(decodes) == 2 and second.affect.voice == first.affect.voice
