"""Registry-driven: every model's tiny preset on every dataset preset runs forward/backward on a generated
batch and, trained by the one trainer, overfits 16 samples (its validation loss falls by at least 80%)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from msa.models import MODELS, build_config
from msa.pipeline.train.data import FeatureSet, from_dict
from msa.core.errors import UsageError
from msa.pipeline.train.loader import DeviceLoader, make_loader
from msa.pipeline.train.experiment import task_for
from msa.pipeline.train.synth import SynthSpec, make_mmsa
from msa.pipeline.train.trainer import evaluate, fit, seed_everything

DATASETS = ("mosi", "sims", "phq8")
CASES = [(m, d) for m in MODELS.names() for d in DATASETS]
MAX_EPOCHS = 150


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sixteen(dataset: str) -> FeatureSet:
    """16 generated samples used as both train and valid (the overfitting check)."""
    raw = make_mmsa(SynthSpec(sizes=(("train", 16),), dataset=dataset, text_len=10, audio_len=12, vision_len=8,
                              noise=0.3), seed=11)
    s = from_dict(raw).split("train")
    return FeatureSet(splits={"train": s, "valid": dataclasses.replace(s, name="valid")})


def _build(name: str, dataset: str, fs: FeatureSet):
    cls = MODELS.get(name)
    config = build_config(name, dataset, "tiny")
    task = task_for(dataset, fs, config)
    try:
        return cls(config, fs.dims(), task), task
    except UsageError as e:  # a model that declares the task unsupported (e.g. classification-only)
        pytest.skip(f"{name} declares {dataset} unsupported: {e}")


@pytest.mark.parametrize("name, dataset", CASES)
def test_forward_backward(name: str, dataset: str) -> None:
    """Epoch 1 runs every batch through the hooks; in epoch 2 (memories and banks filled) each stage's
    backward must reach EVERY trainable parameter group of that stage, not just one (issue 15.9)."""
    seed_everything(0)
    fs = _sixteen(dataset)
    model, _ = _build(name, dataset, fs)
    loader = DeviceLoader(make_loader(fs.split("train"), 8, shuffle=True, seed=0), torch.device("cpu"))
    model.on_train_start(loader)
    model.train()
    for epoch in (1, 2):
        model.on_epoch_start(epoch)
        for stage, _ in model.stages(epoch):
            for i, batch in enumerate(loader):
                model.zero_grad(set_to_none=True)
                out = model(batch)
                assert out["pred"].shape == (8,) and torch.isfinite(out["pred"]).all()
                lo = model.loss(out, batch, epoch, stage)
                assert lo.loss.dim() == 0 and torch.isfinite(lo.loss)
                lo.loss.backward()
                if epoch == 2 and i == len(loader) - 1:
                    for g in model.param_groups():
                        if g.stage == stage:
                            grads = [p.grad for p in g.params if p.requires_grad and p.grad is not None]
                            assert any(float(x.abs().sum()) > 0 for x in grads), \
                                f"stage {stage!r}: no gradient reached parameter group {g.name!r}"
                model.after_backward(out, batch, epoch)
        model.on_epoch_end(epoch)


@pytest.mark.parametrize("name, dataset", CASES)
def test_overfits_sixteen_samples(name: str, dataset: str) -> None:
    seed_everything(0)
    fs = _sixteen(dataset)
    model, task = _build(name, dataset, fs)
    valid = DeviceLoader(make_loader(fs.split("valid"), 16, shuffle=False), torch.device("cpu"))
    start = evaluate(model, valid, task)["loss"]
    target = 0.2 * start
    settings = dataclasses.replace(model.train_settings(), batch_size=8, update_every=1, max_epochs=MAX_EPOCHS,
                                   early_stop=MAX_EPOCHS, scheduler=None)
    res = fit(model, fs.split("train"), fs.split("valid"), None, task, seed=0, settings=settings, device="cpu",
              progress=False, log=lambda line: None, on_epoch=lambda r: r["val_loss"] <= target)
    best = min(r["val_loss"] for r in res.history)
    assert best <= target, f"{name}/{dataset}: validation loss {start:.4f} -> {best:.4f} in {res.epochs_run} epochs"
