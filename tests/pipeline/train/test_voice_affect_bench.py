"""bench/voice_affect_augment.py and bench/voice_affect_cv.py: the augmentation is reproducible and at the
asked SNR, copies keep their actor, and the cross-validation folds never mix an actor into two folds."""
from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def aug():
    return _load("voice_affect_augment")


def _speech_like(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.standard_normal(t.size))


def test_the_same_clip_and_copy_give_the_same_audio_another_copy_differs(aug) -> None:
    x = _speech_like()
    a, steps_a = aug.augment(x, aug._rng("03-01-05-02-01-01-01", 0))
    b, steps_b = aug.augment(x, aug._rng("03-01-05-02-01-01-01", 0))
    c, _ = aug.augment(x, aug._rng("03-01-05-02-01-01-01", 1))
    assert steps_a == steps_b and steps_a and np.array_equal(a, b)
    assert a.dtype == np.float32 and np.isfinite(a).all() and np.abs(a).max() <= 0.95 + 1e-6
    assert not np.array_equal(a, c)


def test_noise_is_added_at_the_asked_snr_and_speed_changes_the_length(aug) -> None:
    x = _speech_like()
    for snr in (5.0, 20.0):
        noisy = aug.noise(x, np.random.default_rng(1), snr, pink=False)
        measured = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
        assert measured == pytest.approx(snr, abs=1.0)  # every frame of this tone is active
    assert aug.speed(x, 1.1).size == pytest.approx(x.size / 1.1, abs=2)
    assert aug.reverb(x, np.random.default_rng(2), 0.5).size == x.size


def test_copies_join_a_ravdess_tree_with_their_actor(aug, tmp_path: Path, monkeypatch) -> None:
    import soundfile as sf

    src = tmp_path / "src" / "Actor_03"
    src.mkdir(parents=True)
    for name in ("03-01-05-02-01-01-03", "03-01-03-01-02-02-03"):
        sf.write(src / f"{name}.flac", _speech_like(0.5).astype(np.float32), 16000)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "label.csv").write_text("video_id,clip_id,label,class,text,mode,actor,intensity\n"
                                   "Actor_03,03-01-05-02-01-01-03,,angry,Kids are talking by the door,train,03,strong\n")
    for _ in range(2):  # a rerun replaces the copies, it does not add more
        monkeypatch.setattr(sys, "argv", ["x", str(tmp_path / "src"), str(out), "--actors", "1-20", "--copies", "2"])
        aug.main()
    rows = list(csv.DictReader(open(out / "label.csv", encoding="utf-8")))
    copies = [r for r in rows if "_aug" in r["clip_id"]]
    assert len(rows) == 5 and len(copies) == 4
    assert {r["actor"] for r in copies} == {"03"} and {r["mode"] for r in copies} == {"train"}
    assert {r["class"] for r in copies} == {"angry", "happy"} and all(r["augment"] for r in copies)
    assert all((out / "Raw" / "Actor_03" / f"{r['clip_id']}.wav").is_file() for r in copies)


def test_cross_validation_folds_cover_actors_1_to_20_once_two_male_two_female_each() -> None:
    cv = _load("voice_affect_cv")
    actors = [a for fold in cv.FOLDS for a in fold]
    assert sorted(actors) == list(range(1, 21))
    assert all(sum(a % 2 for a in fold) == 2 for fold in cv.FOLDS)  # RAVDESS: odd actors male, even female
