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
