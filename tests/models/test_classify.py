"""Every model that declares ``supports_classes`` trains on class labels: one logit per class, cross-entropy,
class weights honoured, and it overfits 16 generated samples; the others refuse in msa-train (test_classes)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from msa.models import MODELS, build_config
from msa.models.layers.classify import class_loss
from msa.pipeline.train.classes import class_task, class_view
from msa.pipeline.train.data import FeatureSet, from_dict
from msa.pipeline.train.loader import DeviceLoader, make_loader
from msa.pipeline.train.synth import SynthSpec, make_mmsa
from msa.pipeline.train.trainer import evaluate, fit, seed_everything

CLASSIFIERS = [n for n in MODELS.names() if getattr(MODELS.get(n), "supports_classes", False)]


def _sixteen() -> FeatureSet:
    """16 generated samples (3 classes: the sign of the latent sentiment) used as train and valid."""
    raw = make_mmsa(SynthSpec(sizes=(("train", 16),), text_len=10, audio_len=12, vision_len=8, noise=0.3), seed=11)
    raw["config"] = {"classes": ["negative", "neutral", "positive"]}
    s = from_dict(raw).split("train")
    fs = FeatureSet(splits={"train": s, "valid": dataclasses.replace(s, name="valid")}, class_names=raw["config"]["classes"])
    return class_view(fs)


def test_the_simple_models_support_classes() -> None:
    assert {"tfn", "lmf", "mult", "pooled_mlp"} <= set(CLASSIFIERS)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_logits_per_class_and_weighted_cross_entropy(name: str) -> None:
    seed_everything(0)
    fs = _sixteen()
    task = dataclasses.replace(class_task("custom", fs), class_weights=(1.0, 5.0, 1.0))
    model = MODELS.get(name)(build_config(name, None, "tiny"), fs.dims(), task)
    batch = next(iter(DeviceLoader(make_loader(fs.split("train"), 8, shuffle=False), torch.device("cpu"))))
    out = model(batch)
    assert out["logits"].shape == (8, 3)
    assert torch.equal(out["pred"], out["logits"].argmax(-1).float())
    assert torch.allclose(out["probs"].sum(-1), torch.ones(8))
    loss = model.loss(out, batch, 1).loss
    plain = torch.nn.functional.cross_entropy(out["logits"], batch["labels"].long())
    weighted = torch.nn.functional.cross_entropy(out["logits"], batch["labels"].long(), weight=torch.tensor([1.0, 5.0, 1.0]))
    assert torch.allclose(loss, weighted) and torch.allclose(class_loss(out, batch, task), weighted)
    assert not torch.allclose(weighted, plain)
    loss.backward()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_overfits_sixteen_samples(name: str) -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    fs = _sixteen()
    task = class_task("custom", fs)
    model = MODELS.get(name)(build_config(name, None, "tiny"), fs.dims(), task)
    valid = DeviceLoader(make_loader(fs.split("valid"), 16, shuffle=False), torch.device("cpu"))
    start = evaluate(model, valid, task)["loss"]
    settings = dataclasses.replace(model.train_settings(), batch_size=8, update_every=1, max_epochs=150,
                                   early_stop=150, scheduler=None, select="val_loss")
    res = fit(model, fs.split("train"), fs.split("valid"), None, task, seed=0, settings=settings, device="cpu",
              progress=False, log=lambda line: None, on_epoch=lambda r: r["val_loss"] <= 0.35 * start)
    assert res.valid["loss"] <= 0.35 * start and res.valid["Accuracy"] >= 0.85, res.valid  # chance: 1.1, 0.5
