"""PooledMLP's ensemble (``members``) and rounded storage (``store_dtype``): the members average at the output,
each trains on its own loss exactly as it would alone, a one-member model keeps the single model's parameter
names (the shipped voice_affect bundle loads unchanged), and a float16 bundle reloads in float32."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msa.models import build_config, build_model
from msa.models.base import Dims, Task
from msa.models.layers.classify import class_loss
from msa.pipeline.train.bundle import WEIGHTS, load_bundle, save_bundle
from msa.pipeline.train.trainer import seed_everything

CLASSES = Task("custom", 0.0, 2.0, "classification", n_classes=3, classes=("a", "b", "c"),
               class_weights=(1.0, 3.0, 1.0))
REGRESSION = Task("mosi", -3.0, 3.0, "mosi")
DIMS = Dims(text=0, audio=6, vision=0, text_len=0, audio_len=1, vision_len=0)


def _model(task: Task = CLASSES, **overrides):
    seed_everything(0)
    config = build_config("pooled_mlp", None, "tiny", {"dropout": 0.0, **overrides})
    return build_model("pooled_mlp", DIMS, task, config), config


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"audio": torch.randn(n, 1, 6, generator=g), "audio_lengths": torch.ones(n, dtype=torch.long),
            "labels": torch.tensor([i % 3 for i in range(n)], dtype=torch.float32)}


def test_one_member_keeps_the_single_model_parameter_names() -> None:
    model, _ = _model()
    assert {k.split(".")[0] for k in model.state_dict()} == {"mlp", "head"}
    assert "members" not in model(_batch())


def test_members_average_probabilities_and_each_trains_on_its_own_loss() -> None:
    model, _ = _model(members=3)
    batch = _batch()
    out = model(batch)
    ys = out["members"]
    assert ys.shape == (3, 8, 3)
    assert not torch.allclose(ys[0], ys[1]), "members are initialised independently"
    mean = ys.softmax(-1).mean(0)
    assert torch.allclose(out["probs"], mean, atol=1e-6) and torch.allclose(out["logits"].softmax(-1), mean, atol=1e-6)
    assert torch.equal(out["pred"], mean.argmax(-1).float())
    own = [class_loss({"logits": y}, batch, CLASSES) for y in ys]
    loss = model.loss(out, batch, 1).loss
    assert torch.allclose(loss, sum(own)), "the sum of the members' weighted cross-entropies"
    loss.backward()
    first = [p.grad.clone() for p in (*model.mlp.parameters(), *model.head.parameters())]
    model.zero_grad()
    class_loss({"logits": model.head(model.mlp(model.pooled(batch)))}, batch, CLASSES).backward()
    alone = [p.grad for p in (*model.mlp.parameters(), *model.head.parameters())]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(first, alone)), "the gradient it would get alone"


def test_regression_members_average_their_values() -> None:
    model, _ = _model(REGRESSION, members=2)
    batch = {**_batch(), "labels": torch.linspace(-1, 1, 8)}
    out = model(batch)
    assert out["members"].shape == (2, 8, 1)
    assert torch.allclose(out["pred"], out["members"].mean(0).squeeze(-1))
    l1 = [(y.squeeze(-1) - batch["labels"]).abs().mean() for y in out["members"]]
    assert torch.allclose(model.loss(out, batch, 1).loss, sum(l1))


def test_float16_bundle_stores_half_and_reloads_float32(tmp_path: Path) -> None:
    model, config = _model(members=2, store_dtype="float16")
    model.eval()
    save_bundle(tmp_path, model, model_name="pooled_mlp", config=config, task=CLASSES, dims=DIMS)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / WEIGHTS))
    assert saved and all(v.dtype == torch.float16 for v in saved.values())
    assert any(k.startswith("more.0.") for k in saved)
    assert json.loads((tmp_path / "bundle.json").read_text())["model"]["config"]["members"] == 2
    b = load_bundle(tmp_path)
    assert all(p.dtype == torch.float32 for p in b.model.parameters()), "stored float16, computed float32"
    batch = _batch()
    with torch.inference_mode():
        ours, theirs = b.model(batch)["probs"].numpy(), model(batch)["probs"].numpy()
    assert np.allclose(ours, theirs, atol=1e-2) and not np.array_equal(ours, theirs), "rounded, not copied"


def test_bad_members_and_store_dtype_are_refused() -> None:
    with pytest.raises(Exception, match="members"):
        _model(members=0)
    with pytest.raises(Exception, match="store_dtype"):
        _model(store_dtype="int8")
