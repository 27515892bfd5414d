"""msa-predict's voice and face readouts with the shipped bundles on real clips, and a clip without speech.

Real models throughout (Whisper tiny.en and base, MiniLM, the voice-affect bundle, fer, MediaPipe).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msa.extractors.fer import EMOTIONS

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
RAVDESS = {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}


def predict(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "msa.pipeline.cli.predict", *args], capture_output=True, text=True,
                          timeout=900, env=env)


def test_speech_clip_reports_voice_emotions_beside_the_score(shared_data: Path, tmp_path: Path) -> None:
    clip = shared_data / "emotion" / "ravdess" / "Actor_21" / "03-01-05-02-01-01-21.flac"  # angry, strong
    r = predict(str(clip), "--json", "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert isinstance(out["score"], float) and out["label"] in ("negative", "neutral", "positive")
    voice = out["voice"]
    assert set(voice["emotions"]) == RAVDESS and abs(sum(voice["emotions"].values()) - 1) < 1e-3
    assert -1 <= voice["valence"] <= 1 and -1 <= voice["arousal"] <= 1
    assert voice["arousal"] > 0  # a shouted angry line from an actor the bundle never heard
    assert out["face"] is None  # audio only
    assert (tmp_path / "p.png").stat().st_size > 0


def test_clip_without_speech_is_not_an_error(shared_data: Path, tmp_path: Path) -> None:
    clip = shared_data / "video" / "face_then_cartoon_hevc.mov"
    r = predict(str(clip), "--json", "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["score"] is None and out["label"] is None and "no_speech" in out["flags"]
    face = out["face"]
    assert set(face["expressions"]) == set(EMOTIONS) and abs(sum(face["expressions"].values()) - 1) < 1e-3
    assert -1 <= face["valence"] <= 1
    assert (tmp_path / "p.png").stat().st_size > 0
    text = predict(str(clip), "--no-affect")  # without the readouts nothing can be said: an error again
    assert text.returncode == 1 and "no recognisable speech" in text.stderr and "Traceback" not in text.stderr


def test_nothing_to_compute_is_still_an_error(video_only_clip: Path) -> None:
    r = predict(str(video_only_clip), "--json")  # no audio, no face (a test pattern)
    assert r.returncode == 1 and r.stdout == ""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("msa-predict:")]
    assert len(errors) == 1 and str(video_only_clip) in errors[0] and "Traceback" not in r.stderr
