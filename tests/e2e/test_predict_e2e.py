"""End to end: a generated clip (synthesised English speech + a face photo) through msa-predict with the
shipped default bundle and the real offline extractors (Whisper, MiniLM, eGeMAPS, face mesh)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msa.models.base import Task
from msa.pipeline.serve import predict
from msa.pipeline.cli.predict import main as predict_main
from msa.pipeline.serve.demo import make_example_clip
from msa.pipeline.serve.predict import DEFAULT_BUNDLES, label_for

BUNDLE = DEFAULT_BUNDLES["sentiment"]
KEYS = {"clip": str, "task": str, "score": float, "label": str, "transcript": str, "modalities": dict,
        "face_ratio": float, "speech_seconds": float, "timings": dict}


@pytest.fixture(scope="module")
def example_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_example_clip(tmp_path_factory.mktemp("example") / "example.mp4")


def test_example_clip_is_speech_with_a_face(example_clip):
    from msa.pipeline.extract.media import probe

    info = probe(example_clip)
    assert info.has_audio and info.has_video and 4.5 < info.duration < 6.0


def test_predict_default_bundle_on_the_example_clip(example_clip, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, "-m", "msa.pipeline.cli.predict", str(example_clip), str(bad), "--json",
                        "--plot", str(tmp_path / "p.png")], capture_output=True, text=True, timeout=900, env=env)
    # the bad clip: one line naming it, non-zero exit; the good clip is still scored
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("msa-predict:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    for key, typ in KEYS.items():
        assert isinstance(out[key], typ), (key, out[key])

    meta = json.loads((BUNDLE / "bundle.json").read_text())
    low, high = meta["output_range"]
    assert out["clip"] == str(example_clip) and out["task"] == "sentiment"
    assert low <= out["score"] <= high
    assert out["label"] == label_for(out["score"], Task(**meta["task"]))
    assert out["label"] == "positive"  # "I really love this movie. It is wonderful, and the acting is great."
    words = out["transcript"].lower()
    assert "love" in words and "wonderful" in words and "great" in words
    used = meta["modalities"]
    if used == ["text"]:
        assert out["modalities"] == {"text": 1.0}
    else:
        assert set(out["modalities"]) == set(used) and abs(sum(out["modalities"].values()) - 1) < 1e-3
    assert out["face_ratio"] > 0.5  # a still photo: a face in every frame
    assert 2.0 < out["speech_seconds"] <= 5.1
    assert {"transcript", "text", "audio", "visual", "model", "total", "load", "plot"} <= set(out["timings"])
    assert all(isinstance(v, float) and v >= 0 for v in out["timings"].values())

    from PIL import Image

    png = Path(out["plot"])
    assert png == tmp_path / "p_example.png"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 600


def test_phq8_without_a_phq8_bundle_explains_how_to_train_one(example_clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(predict.DEFAULT_BUNDLES, "phq8", tmp_path / "no-phq8-bundle")
    assert predict_main([str(example_clip), "--task", "phq8", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("msa-predict: error: no PHQ-8 bundle available")
    assert "--recipe avec2019" in err and "msa-train" in err and "--dataset phq8" in err

    # the sentiment bundle asked for PHQ-8: same exit code, same advice
    assert predict_main([str(example_clip), "--task", "phq8", "--bundle", str(BUNDLE)]) == 2
    err = capsys.readouterr().err
    assert "is a sentiment bundle" in err and "--dataset phq8" in err


def test_segments_with_the_default_bundle_and_real_speech_recognition(example_clip):
    """--segments on the example clip: Whisper's word times cut it at its sentence end into runs that the
    default bundle scores one by one (both positive sentences), and the clip's score is their mean."""
    import numpy as np

    from msa.pipeline.serve.predict import PredictOptions, Predictor

    with Predictor(PredictOptions(bundle=BUNDLE, signals=(), affect=False, segments=1.5)) as p:
        r = p.predict(example_clip)
    runs = r.segments
    assert len(runs) >= 2 and all(s["label"] == "positive" for s in runs), runs
    assert " ".join(s["text"] for s in runs) == r.transcript.strip() or \
        [w for s in runs for w in s["text"].split()] == [w for w, _, _ in r.words]
    assert all(a["end"] <= b["start"] for a, b in zip(runs, runs[1:]))
    spans = np.array([s["end"] - s["start"] for s in runs])
    assert r.score == pytest.approx(float(np.dot(spans / spans.sum(), [s["score"] for s in runs])), abs=1e-3)
    assert r.label == "positive" and not r.truncated
