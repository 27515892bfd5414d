"""A small speech-emotion classifier on real RAVDESS speech, through the CLIs: label.csv with a class
column -> msa-extract (eGeMAPS only) -> msa-train --task classification --group-by -> msa-eval ->
msa-predict. Four actors, three emotions, one statement: 40 clips. Skipped without ../shared/data.

RAVDESS (CC BY-NC-SA 4.0) is read from ../shared/data and never copied into the repository.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from msa.pipeline.cli.eval import main as eval_main
from msa.pipeline.cli.extract import main as extract_main
from msa.pipeline.cli.predict import main as predict_main
from msa.pipeline.cli.train import main as train_main
from msa.pipeline.train.bundle import read_meta

EMOTIONS = {"01": "neutral", "04": "sad", "05": "angry"}  # RAVDESS file-name code -> class
ACTORS = (1, 2, 3, 4)  # 1-3 train (one of them carved out as valid by --group-by), 4 test


def ravdess_dataset(src: Path, root: Path) -> list[Path]:
    """label.csv (video_id = actor folder, class, actor, mode) + Raw/ of symlinks; the test actor's clips."""
    rows, test_clips = ["video_id,clip_id,class,actor,mode"], []
    for a in ACTORS:
        folder = f"Actor_{a:02d}"
        (root / "Raw" / folder).mkdir(parents=True)
        for f in sorted((src / folder).glob("*.flac")):
            _, _, emotion, _, statement, _, _ = f.stem.split("-")
            if emotion in EMOTIONS and statement == "01":
                (root / "Raw" / folder / f.name).symlink_to(f)
                rows.append(f"{folder},{f.stem},{EMOTIONS[emotion]},actor{a},{'test' if a == 4 else 'train'}")
                if a == 4:
                    test_clips.append(root / "Raw" / folder / f.name)
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    return test_clips


@pytest.mark.slow
@pytest.mark.realdata
def test_ravdess_emotions_through_extract_train_eval_predict(shared_data: Path, tmp_path: Path, capsys) -> None:
    src = shared_data / "emotion" / "ravdess"
    if not src.is_dir():
        pytest.skip("RAVDESS is not in ../shared/data")
    test_clips = ravdess_dataset(src, tmp_path / "rav")
    assert len(test_clips) == 10
    feats = tmp_path / "feats"
    assert extract_main([str(tmp_path / "rav"), "--out", str(feats), "--quiet",
                         "--extractors", "asr:none,text:none,visual:none,audio:egemaps"]) == 0
    capsys.readouterr()

    run = tmp_path / "run"
    rc = train_main(["--data", str(feats / "features.pkl"), "--task", "classification", "--model", "pooled_mlp",
                     "--group-by", "actor", "--split-ratio", "0.67", "0.33", "0", "--normalize",
                     "--class-weights", "balanced", "--epochs", "15", "--out", str(run), "--quiet"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["angry", "neutral", "sad"]
    test = metrics["seeds"][0]["test"]
    assert np.array(test["confusion"]).sum(axis=1).tolist() == [4, 2, 4]  # actor 4: 4 angry, 2 neutral, 4 sad
    meta = read_meta(run)
    groups = meta["provenance"]["split_groups"]
    assert groups["test"] == ["actor4"] and len(groups["valid"]) == 1 and len(groups["train"]) == 2
    assert not set(groups["train"]) & set(groups["valid"])
    assert meta["task"]["classes"] == ["angry", "neutral", "sad"] and meta["modalities"] == ["audio"]

    assert eval_main(["--bundle", str(run), "--data", str(feats / "features.pkl"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["classes"] == metrics["classes"] and res["n"] == 10
    assert res["metrics"]["UAR"] == test["UAR"] and res["metrics"]["confusion"] == test["confusion"]

    transcript = tmp_path / "t.txt"
    transcript.write_text("Kids are talking by the door.")  # no ASR: the bundle does not read text
    assert predict_main([str(test_clips[0]), "--bundle", str(run), "--signals", "none", "--transcript",
                         str(transcript), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["task"] == "classification" and set(pred["probabilities"]) == {"angry", "neutral", "sad"}
    assert pred["label"] == max(pred["probabilities"], key=pred["probabilities"].get)
    assert sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
