"""Classification on class labels: the task, class weights, relabelling for a bundle, and msa-train/msa-eval."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from msa.core.errors import DataError, UsageError
from msa.pipeline.cli.eval import main as eval_main
from msa.pipeline.cli.train import main as train_main
from msa.pipeline.train.bundle import load_bundle
from msa.pipeline.train.classes import bundle_view, class_task, class_view, parse_class_weights
from msa.pipeline.train.data import from_dict

NAMES = ["angry", "happy", "sad"]


def audio_only(seed: int = 0, sizes: dict[str, int] | None = None, names: list[str] = NAMES) -> dict:
    """Per-clip 6-d "functional" vectors (audio only), the class shifting one feature: a learnable signal."""
    rng = np.random.default_rng(seed)
    out: dict = {"config": {"classes": list(names)}}
    for split, n in (sizes or {"train": 60, "valid": 24, "test": 24}).items():
        c = np.arange(n) % len(names)
        a = rng.normal(size=(n, 1, 6)).astype(np.float32)
        a[:, 0, 0] += 3.0 * c
        out[split] = {"audio": a, "audio_lengths": np.ones(n, np.int64), "classification_labels": c,
                      "id": np.array([f"{split}{i}" for i in range(n)])}
    return out


def test_an_audio_only_class_file_loads_with_zero_width_text_and_vision() -> None:
    fs = from_dict(audio_only())
    dims = fs.dims()
    assert (dims.text, dims.audio, dims.vision) == (0, 6, 0)
    assert fs.class_names == tuple(NAMES)
    assert np.isnan(fs.split("train").labels).all()  # no regression labels in this file
    task = class_task("custom", fs)
    assert (task.n_classes, task.classes, task.metrics, task.low, task.high) == (3, tuple(NAMES), "classification", 0, 2)
    assert class_view(fs).split("valid").labels.tolist() == [float(i % 3) for i in range(24)]


def test_bare_class_indices_get_numbered_names() -> None:
    raw = audio_only()
    del raw["config"]
    assert from_dict(raw).class_names == ("0", "1", "2")


def test_class_task_refusals() -> None:
    raw = audio_only()
    raw["test"]["classification_labels"] = np.full(24, 2)
    raw["train"]["classification_labels"] = np.arange(60) % 2  # "sad" never in train
    with pytest.raises(DataError, match="split 'valid' has class.*sad.*never occur in train"):
        class_task("custom", from_dict(raw))
    with pytest.raises(DataError, match="binary preset needs exactly 2 classes.*3"):
        class_task("binary", from_dict(audio_only()))
    no_classes = audio_only()
    for s in ("train", "valid", "test"):
        no_classes[s].pop("classification_labels")
        no_classes[s]["regression_labels"] = np.zeros(len(no_classes[s]["id"]), np.float32)
    with pytest.raises(DataError, match="no class labels"):
        class_task("custom", from_dict(no_classes))


def test_class_weights() -> None:
    train = np.array([0] * 6 + [1] * 2 + [2] * 4)
    assert parse_class_weights("balanced", train, 3) == pytest.approx((12 / 18, 12 / 6, 12 / 12))
    assert parse_class_weights("1,2.5,1", train, 3) == (1.0, 2.5, 1.0)
    assert parse_class_weights(None, train, 3) == ()
    for bad in ("1,2", "a,b,c", "1,0,1"):
        with pytest.raises(UsageError, match="--class-weights"):
            parse_class_weights(bad, train, 3)


def test_bundle_view_matches_classes_by_name() -> None:
    raw = audio_only(names=["happy", "sad"])  # a test file holding a subset, in its own order
    fs = from_dict(raw)
    view = bundle_view(fs, ("angry", "happy", "sad"))
    assert view.split("test").labels[:4].tolist() == [1.0, 2.0, 1.0, 2.0]
    with pytest.raises(DataError, match="calm.*does not know"):
        bundle_view(from_dict(audio_only(names=["calm", "sad"])), ("angry", "happy", "sad"))


def run_cli(main, argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_train_and_eval_through_the_clis_keep_the_class_names(tmp_path: Path, capsys) -> None:
    data = tmp_path / "feats.pkl"
    data.write_bytes(pickle.dumps(audio_only()))
    run = tmp_path / "run"
    rc, out, err = run_cli(train_main, ["--data", str(data), "--task", "classification", "--model", "pooled_mlp",
                                        "--preset", "tiny", "--epochs", "40", "--class-weights", "balanced", "--normalize",
                                        "--config", _json(tmp_path, {"train": {"early_stop": 20}}), "--out", str(run),
                                        "--quiet"], capsys)
    assert rc == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == NAMES and metrics["metrics"] == "classification"
    test = metrics["seeds"][0]["test"]
    assert test["UAR"] >= 0.75 and np.array(test["confusion"]).sum() == 24  # the signal is easy: it is learnt
    header, row = (run / "results.csv").read_text().splitlines()[:2]
    assert "test_UAR" in header and "test_confusion" in header and "[[" in row
    assert "select max:UAR" in err  # pooled_mlp's "auto" selection on a class task
    bundle = load_bundle(run)
    assert bundle.task.classes == tuple(NAMES) and bundle.task.class_weights == pytest.approx((1.0, 1.0, 1.0))
    assert bundle.meta["modalities"] == ["audio"]
    rc, out, err = run_cli(eval_main, ["--bundle", str(run), "--data", str(data), "--json"], capsys)
    res = json.loads(out)
    assert rc == 0 and res["classes"] == NAMES and res["metrics"]["UAR"] == test["UAR"]
    rc, out, _ = run_cli(eval_main, ["--bundle", str(run), "--data", str(data)], capsys)
    assert rc == 0 and "true \\ pred" in out and "angry" in out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mosi"], "without a regression label.*--task classification"),
    (["--task", "classification", "--model", "self_mm"], "does not train on class labels; use one of: .*pooled_mlp"),
    (["--task", "classification", "--model", "tfn"], "needs text features"),
    (["--dataset", "binary"], "binary preset needs exactly 2 classes"),
    (["--task", "regression"], "--dataset is required"),
    (["--dataset", "mosi", "--class-weights", "balanced"], "applies to --task classification"),
    (["--task", "classification", "--group-by", "speaker"], "no column 'speaker' to group by; it has: video_id"),
])
def test_bad_classification_requests_are_one_line_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    data = tmp_path / "feats.pkl"
    data.write_bytes(pickle.dumps(audio_only()))
    base = ["--data", str(data), "--out", str(tmp_path / "run"), "--quiet"]
    if "--model" not in argv:
        base += ["--model", "pooled_mlp"]
    rc, _, err = run_cli(train_main, base + argv, capsys)
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_the_binary_preset_through_msa_train(tmp_path: Path, capsys) -> None:
    raw = audio_only(names=["no", "yes"])
    data = tmp_path / "feats.npz"
    from msa.pipeline.train.data import save_npz

    save_npz(raw, data)
    rc, out, err = run_cli(train_main, ["--data", str(data), "--dataset", "binary", "--model", "pooled_mlp",
                                        "--preset", "tiny", "--epochs", "3", "--out", str(tmp_path / "run")], capsys)
    assert rc == 0, err
    assert "F1_binary" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["metrics"] == "binary" and metrics["task"] == "binary" and metrics["classes"] == ["no", "yes"]


def test_a_fixed_epoch_count_trains_without_a_valid_split(tmp_path: Path, capsys) -> None:
    """select "last" (the epoch count chosen beforehand by grouped cross-validation): a file with train and
    test only trains on all of train, keeps the final weights, and still scores test once."""
    data = tmp_path / "feats.pkl"
    data.write_bytes(pickle.dumps(audio_only(sizes={"train": 60, "test": 24})))
    run = tmp_path / "run"
    cfg = _json(tmp_path, {"train": {"select": "last", "max_epochs": 12}})
    rc, out, err = run_cli(train_main, ["--data", str(data), "--task", "classification", "--model", "pooled_mlp",
                                        "--preset", "tiny", "--config", cfg, "--normalize", "--out", str(run),
                                        "--quiet"], capsys)
    assert rc == 0, err
    assert "best epoch 12" in out and "weights after epoch 12" in err
    meta = load_bundle(run).meta["provenance"]
    assert meta["splits"] == {"train": 60, "test": 24} and meta["metrics"]["valid"] == {}
    assert meta["metrics"]["test"]["UAR"] >= 0.75
    rc, _, err = run_cli(train_main, ["--data", str(data), "--task", "classification", "--model", "pooled_mlp",
                                      "--preset", "tiny", "--out", str(tmp_path / "run2"), "--quiet"], capsys)
    assert rc != 0 and "no split 'valid'" in err  # any other selection rule still needs one


def test_an_unsplit_file_asks_for_group_by(tmp_path: Path, capsys) -> None:
    raw = audio_only(sizes={"all": 30})
    data = tmp_path / "feats.pkl"
    data.write_bytes(pickle.dumps(raw))
    rc, _, err = run_cli(train_main, ["--data", str(data), "--task", "classification", "--model", "pooled_mlp",
                                      "--out", str(tmp_path / "run")], capsys)
    assert rc == 2 and "pass --group-by COLUMN" in err


def test_predict_prints_the_top_class_and_the_probabilities() -> None:
    from msa.pipeline.cli.predict import _human

    r = {"clip": "a.wav", "task": "classification", "score": 0.6, "label": "sad", "range": [0.0, 1.0],
         "probabilities": {"angry": 0.3, "happy": 0.1, "sad": 0.6}, "transcript": "", "transcript_source": "given",
         "modalities": {"audio": 1.0}, "face_ratio": None, "speech_seconds": None, "timings": {}}
    lines = _human(r).splitlines()
    assert lines[0] == "a.wav: sad (probability 0.60, classification)"
    assert lines[1] == "  classes: sad 0.60, angry 0.30, happy 0.10"


def _json(tmp_path: Path, obj: dict) -> str:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(obj))
    return str(p)
