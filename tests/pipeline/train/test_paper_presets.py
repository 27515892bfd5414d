"""Issue 15, the reproduction settings: ``paper`` presets (published encoder, refused in one line when
absent, recorded when used), MMSA's selection rule, MIMRL's min-max scaling and the PHQ-8 clamp flag."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msa.core.errors import UsageError
from msa.models import MODELS, build_config
from msa.models.layers.text import minilm_path
from msa.pipeline.cli import train as train_cli
from msa.pipeline.train.data import from_dict, make_task, save_npz
from msa.pipeline.train.loader import DeviceLoader, make_loader, norm_stats
from msa.pipeline.train.synth import SynthSpec, make_mmsa
from msa.pipeline.train.trainer import evaluate, fit, seed_everything

torch.set_num_threads(1)
SMALL = SynthSpec(sizes=(("train", 20), ("valid", 10), ("test", 6)), text_len=8, text_dim=12, audio_len=10,
                  vision_len=8)
PUBLISHED = {  # (model, dataset) -> the encoder the paper used
    ("self_mm", "mosi"): "bert-base-uncased", ("self_mm", "mosei"): "bert-base-uncased",
    ("self_mm", "sims"): "bert-base-chinese", ("self_mm", "simsv2"): "bert-base-chinese",
    ("mmim", "mosi"): "bert-base-uncased", ("mmim", "mosei"): "bert-base-uncased",
    ("hscl", "mosi"): "bert-base-uncased", ("hscl", "mosei"): "bert-base-uncased",
    ("mimrl", "mosi"): "bert-base-uncased", ("mimrl", "mosei"): "bert-base-uncased",
    ("mimrl", "phq8"): "bert-base-uncased", ("clip_ca_msa", "sims"): "hfl/chinese-roberta-wwm-ext",
}


@pytest.mark.parametrize("model, dataset", sorted(PUBLISHED))
def test_paper_presets_name_the_published_encoder_and_minilm_stays_the_default(model: str, dataset: str) -> None:
    assert build_config(model, dataset, "paper").text_encoder == PUBLISHED[(model, dataset)]
    assert build_config(model, dataset).text_encoder == "minilm"


def test_paper_flags_per_model() -> None:
    for model in ("self_mm", "tfn", "lmf", "mult"):  # MMSA's own runs: its selection rule
        assert build_config(model, "mosi", "paper").train.select == "mmsa_loss"
    assert build_config("mimrl", "mosi", "paper").train.normalize == "minmax"
    assert build_config("mimrl", "mosei", "paper").train.normalize == "minmax"
    assert build_config("mimrl", "phq8", "paper").clamp_phq8 is False
    assert build_config("mimrl", "phq8").clamp_phq8 is True and build_config("mmim", "phq8").clamp_phq8 is True
    with pytest.raises(UsageError, match="no 'paper' preset for dataset 'phq8'; it has one for mosi, mosei"):
        build_config("hscl", "phq8", "paper")


def test_paper_preset_without_its_encoder_fails_in_one_line(tmp_path: Path, capsys) -> None:
    data = save_npz(make_mmsa(SMALL, seed=1), tmp_path / "f.npz")
    argv = ["--data", str(data), "--dataset", "mosi", "--model", "self_mm", "--preset", "paper",
            "--out", str(tmp_path / "run"), "--epochs", "1", "--device", "cpu", "--quiet"]
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'bert-base-uncased' (preset 'paper') is not available offline" in err
    assert "--text-encoder DIR" in err and not (tmp_path / "run").exists()


def test_the_encoder_used_is_recorded(tmp_path: Path) -> None:
    """--text-encoder gives the preset its folder (MiniLM stands in for bert-base-uncased here)."""
    data = save_npz(make_mmsa(SMALL, seed=1), tmp_path / "f.npz")
    out = tmp_path / "run"
    overrides = tmp_path / "small.json"
    overrides.write_text(json.dumps({"train": {"batch_size": 10}, "finetune": False}))
    assert train_cli.main(["--data", str(data), "--dataset", "mosi", "--model", "self_mm", "--preset", "paper",
                           "--text-encoder", minilm_path(), "--config", str(overrides), "--out", str(out),
                           "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows[0]["text_encoder"] == minilm_path() and "valid_loss_mmsa" in rows[0]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["text_encoder"]["name"] == minilm_path() and meta["text_encoder"]["vocabulary"]["size"] == 30522
    assert meta["model"]["config"]["train"]["select"] == "mmsa_loss"


def test_mmsa_selection_value_is_the_batch_mean_rounded() -> None:
    """MMSA averages the per-batch losses (a short last batch weighs as a full one) and rounds to 4 places."""
    fs = from_dict(make_mmsa(SMALL, seed=3))
    task = make_task("mosi", fs)
    seed_everything(0)
    model = MODELS.get("tfn")(build_config("tfn", "mosi", "tiny"), fs.dims(), task).eval()
    loader = DeviceLoader(make_loader(fs.split("valid"), 4, shuffle=False), torch.device("cpu"))  # 4 + 4 + 2
    res = evaluate(model, loader, task, batch_loss=True)
    with torch.no_grad():
        preds = [model(b)["pred"] for b in loader]
    errors = [(p - b["labels"]).abs() for p, b in zip(preds, loader)]
    by_batch = float(np.mean([e.mean().item() for e in errors]))
    assert res["loss_mmsa"] == round(by_batch, 4)
    assert res["loss"] == pytest.approx(torch.cat(errors).mean().item(), abs=1e-6)
    assert abs(by_batch - res["loss"]) > 1e-5  # the two averages differ: the rule matters
    settings = build_config("tfn", "mosi", "tiny", {"train": {"select": "mmsa_loss", "max_epochs": 2}}).train
    r = fit(model, fs.split("train"), fs.split("valid"), None, task, seed=0, settings=settings, device="cpu",
            progress=False, log=lambda line: None)
    values = [h["val_loss_mmsa"] for h in r.history]
    assert r.valid["loss_mmsa"] == min(values) and r.best_epoch == values.index(min(values)) + 1


def test_minmax_scaling_maps_the_train_frames_to_minus_one_one() -> None:
    fs = from_dict(make_mmsa(SMALL, seed=4))
    train = fs.split("train")
    stats = norm_stats(train, kind="minmax")
    from msa.pipeline.train.loader import apply_norm

    scaled = apply_norm(train, stats)
    for m in ("audio", "vision"):
        seq, lengths = getattr(train, m), getattr(train, f"{m}_lengths")
        true = np.arange(seq.shape[1])[None, :] < lengths[:, None]
        x = scaled[m][true]
        assert x.min() == pytest.approx(-1.0, abs=1e-5) and x.max() == pytest.approx(1.0, abs=1e-5)
        lo, hi = seq[true].min(), seq[true].max()  # one global scale per modality, not per feature
        np.testing.assert_allclose(x, 2 * (seq[true] - lo) / (hi - lo) - 1, atol=1e-5)
        assert not scaled[m][~true].any()  # padding stays zero

