"""checkpoints/train_default.py end to end on a tiny labelled set: both stages, and --init chaining."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from msa.pipeline.train.bundle import load_bundle

REPO = Path(__file__).resolve().parents[2]
TINY = json.dumps({"text_encoder": "tiny-random", "train_layers": 1, "cache_frozen": False})
WORDS = ["great", "awful", "fine", "terrible", "lovely", "boring", "superb", "bad"]


@pytest.fixture(scope="module")
def td():
    spec = importlib.util.spec_from_file_location("train_default", REPO / "checkpoints" / "train_default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    """A MOSI-shaped CSV and one VADER-shaped ratings file (signs follow the words)."""
    root = tmp_path / "data"
    (root / "mosi").mkdir(parents=True)
    (root / "text_sentiment").mkdir()
    rows = ["video_id,clip_id,text,label,mode"]
    for i in range(24):
        word = WORDS[i % len(WORDS)]
        label = 2.0 if i % 2 == 0 else -2.0
        rows.append(f"v{i},{i},it was {word},{label},{'train' if i < 16 else 'valid'}")
    (root / "mosi" / "mosi_train_valid.csv").write_text("\n".join(rows) + "\n")
    vader = [f"{i}\t{3.0 if i % 2 == 0 else -3.0}\tso {WORDS[i % len(WORDS)]}" for i in range(8)]
    (root / "text_sentiment" / "vader_icwsm2014_movieReviewSnippets_GroundTruth.txt").write_text("\n".join(vader))
    return root


def test_two_stages_then_init_chains_provenance(td, data_root: Path, tmp_path: Path) -> None:
    common = ["--data-root", str(data_root), "--config", TINY, "--vader", "movieReview", "--threads", "1"]
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    assert td.main([*common, "--epochs", "1", "0", "--out", str(first)]) == 0
    meta = json.loads((first / "bundle.json").read_text())
    assert [s["stage"] for s in meta["provenance"]["stages"]] == ["mix"]
    assert meta["provenance"]["rows"] == {"mosi_train": 16, "mosi_valid": 8, "vader": 8,
                                          "stage_mix_train": 40, "mosi_repeat": 2}

    assert td.main([*common, "--epochs", "0", "1", "--init", str(first), "--out", str(second)]) == 0
    record = json.loads((second / "metrics.json").read_text())
    assert [(s["stage"], s.get("from")) for s in record["stages"]] == [("mix", str(first)), ("mosi", None)]
    assert record["stages"][0]["history"], "the carried stage keeps its per-epoch history"
    bundle = load_bundle(second)
    init = bundle.meta["provenance"]["init"]
    assert init["bundle"] == str(first) and "--epochs 1 0" in init["command"]
    assert init["weights_sha256"] == meta["weights"]["sha256"]
    assert bundle.meta["provenance"]["metrics"]["valid"] == record["valid"]
    assert bundle.config.lr_encoder == 2e-5  # stage 2's learning rate, from --stage2-lr's default


def test_nothing_to_run_and_missing_data_are_refused(td, data_root: Path, tmp_path: Path, capsys) -> None:
    common = ["--data-root", str(data_root), "--config", TINY, "--vader", "movieReview", "--threads", "1"]
    assert td.main([*common, "--epochs", "0", "0", "--out", str(tmp_path / "none")]) == 2
    assert "no stage ran" in capsys.readouterr().err
    assert not (tmp_path / "none" / "bundle.json").exists()
    assert td.main(["--data-root", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
