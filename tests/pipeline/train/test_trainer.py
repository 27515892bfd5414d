"""The one trainer, driven by a small test-local model: determinism, selection, accumulation, stages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from msa.models.base import Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from msa.pipeline.train.data import from_dict, make_task
from msa.core.errors import UsageError
from msa.pipeline.train.synth import SynthSpec, make_mmsa
from msa.pipeline.train.trainer import TrainingError, evaluate, fit, parse_select, seed_everything
from msa.pipeline.train.loader import DeviceLoader, make_loader

torch.set_num_threads(1)


@dataclass(frozen=True)
class LinConfig:
    lr: float = 0.05
    batch_size: int = 8
    update_every: int = 1
    early_stop: int = 3
    max_epochs: int = 12
    two_stages: bool = False
    aux_passes: float = 1.0  # passes of the "aux" stage (two_stages)
    dropout: float = 0.2
    select: str = "val_loss"
    scheduler: str | None = None
    nan_at_epoch: int = 0
    stage_without_group: bool = False


class Lin(MSAModel):
    """pred = a(mean audio) + v(mean vision); optional second stage "aux" owning the vision head."""

    name = "lin"

    def __init__(self, config: LinConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        self.a = nn.Linear(dims.audio, 1)
        self.v = nn.Linear(dims.vision, 1)
        self.drop = nn.Dropout(config.dropout)
        self.events: list[tuple[Any, ...]] = []
        self.sentinel_seen: list[int] = []
        self.epoch = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if batch["audio"].abs().max() > 999:  # the test split carries a sentinel value
            self.sentinel_seen.append(self.epoch)
        xa = self.drop(batch["audio"].mean(1))
        return {"pred": (self.a(xa) + self.v(batch["vision"].mean(1))).squeeze(-1)}

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], epoch: int, stage: str = "main") -> LossOut:
        self.events.append(("loss", stage, epoch, self.a.weight.detach().clone(), self.v.weight.detach().clone(),
                            {k: v.detach().clone() for k, v in self.state_dict().items()}))
        loss = (out["pred"] - batch["labels"]).abs().mean()
        if self.config.nan_at_epoch and epoch == self.config.nan_at_epoch:
            loss = loss * float("nan")
        return LossOut(loss, {"mean_pred": float(out["pred"].detach().mean())})

    def param_groups(self) -> list[ParamGroup]:
        stage = "aux" if self.config.two_stages else "main"
        return [ParamGroup("audio", list(self.a.parameters()), self.config.lr),
                ParamGroup("vision", list(self.v.parameters()), self.config.lr, stage=stage)]

    def train_settings(self) -> TrainSettings:
        c = self.config
        return TrainSettings(batch_size=c.batch_size, update_every=c.update_every, early_stop=c.early_stop,
                             max_epochs=c.max_epochs, select=c.select, scheduler=c.scheduler)

    def stages(self, epoch: int) -> list[tuple[str, float]]:
        if self.config.stage_without_group:
            return [("ghost", 1)]
        return [("aux", self.config.aux_passes), ("main", 1)] if self.config.two_stages else [("main", 1)]

    def on_train_start(self, loader: Any) -> None:
        self.events.append(("train_start", len(loader), next(iter(loader))["audio"].device.type))

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self.events.append(("epoch_start", epoch))

    def after_backward(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], epoch: int) -> None:
        self.events.append(("after_backward", self.a.weight.grad.detach().clone(), batch))

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {"estimate": float(epoch) * 0.5}


@pytest.fixture(scope="module")
def fs():
    return from_dict(make_mmsa(SynthSpec(sizes=(("train", 40), ("valid", 16), ("test", 16)), noise=1.0), seed=5))


def _run(fs, seed: int = 7, test=None, **cfg):
    seed_everything(seed)
    task = make_task("mosi", fs)
    model = Lin(LinConfig(**cfg), fs.dims(), task)
    res = fit(model, fs.split("train"), fs.split("valid"), test, task, seed=seed, device="cpu", progress=False,
              log=lambda line: None)
    return model, res


def test_same_seed_gives_identical_runs(fs) -> None:
    m1, r1 = _run(fs)
    m2, r2 = _run(fs)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(r1.history) == strip(r2.history)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    _, r3 = _run(fs, seed=8)
    assert strip(r3.history) != strip(r1.history)


def test_early_stopping_selects_the_best_valid_epoch(fs) -> None:
    model, res = _run(fs, lr=0.3, early_stop=2, max_epochs=30)
    losses = [r["val_loss"] for r in res.history]
    assert res.best_epoch == int(np.argmin(losses)) + 1
    assert res.stopped == "early_stop" and res.epochs_run == res.best_epoch + 2
    loader = DeviceLoader(make_loader(fs.split("valid"), 8, shuffle=False), torch.device("cpu"))
    again = evaluate(model, loader, make_task("mosi", fs))  # the model holds the selected weights
    assert again["loss"] == pytest.approx(losses[res.best_epoch - 1], abs=1e-6)
    assert res.valid["loss"] == losses[res.best_epoch - 1]
    assert all("val_MAE" in r and "estimate" in r and "train_mean_pred" in r for r in res.history)


def test_selection_by_a_maximised_metric(fs) -> None:
    _, res = _run(fs, select="max:Corr")
    corr = [r["val_Corr"] for r in res.history]
    assert res.best_epoch == int(np.argmax(corr)) + 1
    with pytest.raises(UsageError):
        parse_select("best:Corr")


def test_select_last_keeps_the_final_epoch_and_needs_no_valid_split(fs) -> None:
    """``last``: a fixed epoch count (chosen beforehand, e.g. by grouped cross-validation), no early stop;
    with a valid split it is only logged, and without one the run is the same."""
    model, res = _run(fs, select="last", lr=0.3, early_stop=1, max_epochs=9)
    assert res.best_epoch == res.epochs_run == 9 and res.stopped == "max_epochs"
    assert all("val_loss" in r for r in res.history) and res.valid == {k[4:]: v for k, v in res.history[-1].items()
                                                                       if k.startswith("val_")}
    seed_everything(7)
    task = make_task("mosi", fs)
    alone = Lin(LinConfig(select="last", lr=0.3, early_stop=1, max_epochs=9), fs.dims(), task)
    res2 = fit(alone, fs.split("train"), None, None, task, seed=7, device="cpu", progress=False, log=lambda line: None)
    assert res2.best_epoch == 9 and res2.valid == {} and not any("val_loss" in r for r in res2.history)
    for k, v in model.state_dict().items():
        assert torch.equal(v, alone.state_dict()[k])  # validation never changes what is trained
    with pytest.raises(UsageError, match="needs a valid split"):
        fit(Lin(LinConfig(), fs.dims(), task), fs.split("train"), None, None, task, seed=7, device="cpu",
            progress=False, log=lambda line: None)
    assert parse_select("last") == ("last", False)


def test_test_split_is_scored_once_after_selection_and_never_selects(fs) -> None:
    def test_split(scale: float):
        raw = make_mmsa(SynthSpec(sizes=(("test", 16),)), seed=int(scale))
        raw["test"]["audio"][:, 0, 0] = 1000.0 * scale
        return from_dict(raw).split("test")

    m1, r1 = _run(fs, test=test_split(1.0))
    m2, r2 = _run(fs, test=test_split(2.0))
    assert r1.best_epoch == r2.best_epoch and r1.valid == r2.valid
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert r1.test is not None and r1.test != r2.test
    assert m1.sentinel_seen == [r1.epochs_run] * 2  # 16 test samples in batches of 8, after the last epoch only


def test_accumulation_steps_after_full_windows_only(fs) -> None:
    # 40 train samples in batches of 8 -> 5 batches; windows of 2 -> steps after batches 2 and 4, not 5
    model, res = _run(fs, update_every=2, max_epochs=2, early_stop=5, dropout=0.0)
    w = [e[3] for e in model.events if e[0] == "loss"]
    assert len(w) == 10  # training batches only (evaluation does not call loss)
    changed = [not torch.equal(w[i], w[i + 1]) for i in range(len(w) - 1)]
    assert changed == [False, True, False, True, False, False, True, False, True]
    assert res.epochs_run == 2


def test_accumulated_gradient_is_the_window_sum_and_restarts_from_zero(fs) -> None:
    # windows of 3 over 5 batches: [1 2 3] stepped, [4 5] trailing (not stepped), then epoch 2 starts fresh
    model, _ = _run(fs, update_every=3, max_epochs=2, early_stop=5, dropout=0.0)
    states = [e[5] for e in model.events if e[0] == "loss"]
    grads = [(e[1], e[2]) for e in model.events if e[0] == "after_backward"]
    probe = Lin(LinConfig(dropout=0.0), fs.dims(), make_task("mosi", fs))

    def own(i: int) -> torch.Tensor:  # batch i's gradient alone, at the weights it saw
        probe.load_state_dict(states[i])
        probe.zero_grad()
        batch = grads[i][1]
        (probe(batch)["pred"] - batch["labels"]).abs().mean().backward()
        return probe.a.weight.grad.clone()

    assert torch.allclose(grads[0][0], own(0))
    assert torch.allclose(grads[1][0], own(0) + own(1))
    assert torch.allclose(grads[2][0], own(0) + own(1) + own(2))
    assert torch.allclose(grads[3][0], own(3))  # zeroed at the window's first batch
    assert torch.allclose(grads[4][0], own(3) + own(4))
    assert torch.allclose(grads[5][0], own(5))  # the unstepped trailing window does not leak into epoch 2
    assert torch.equal(states[4]["a.weight"], states[5]["a.weight"])  # and was never stepped


def test_each_stage_steps_only_its_own_groups(fs) -> None:
    model, res = _run(fs, two_stages=True, max_epochs=2, early_stop=5)
    losses = [e for e in model.events if e[0] == "loss"]
    for prev, nxt in zip(losses, losses[1:]):
        if prev[1] != nxt[1] or prev[2] != nxt[2]:
            continue  # stage boundary
        a_moved, v_moved = not torch.equal(prev[3], nxt[3]), not torch.equal(prev[4], nxt[4])
        if prev[1] == "aux":
            assert v_moved and not a_moved
        else:
            assert a_moved and not v_moved
    assert [e[1] for e in losses[:10]] == ["aux"] * 5 + ["main"] * 5
    assert "aux/loss" in res.history[0] and "lr/aux" in res.history[0]


@pytest.mark.parametrize("passes,aux_batches", [(0.5, 3), (0.2, 1), (1.5, 8), (2, 10)])
def test_a_fraction_of_a_pass_runs_its_first_batches(fs, passes, aux_batches) -> None:
    """40 training rows in batches of 8: 5 batches a pass; 0.5 of a pass is its first 3 (MMIM's MOSEI stage)."""
    model, _ = _run(fs, two_stages=True, aux_passes=passes, max_epochs=1, early_stop=5)
    stages = [e[1] for e in model.events if e[0] == "loss"]
    assert stages == ["aux"] * aux_batches + ["main"] * 5
    from msa.pipeline.train.trainer import pass_batches

    assert pass_batches(0.5, 5) == [3] and pass_batches(2.25, 4) == [4, 4, 1] and pass_batches(1, 7) == [7]


def test_hooks_and_per_epoch_logs(fs) -> None:
    model, res = _run(fs, max_epochs=3, early_stop=10)
    kinds = [e[0] for e in model.events if e[0] != "loss" and e[0] != "after_backward"]
    assert kinds == ["train_start", "epoch_start", "epoch_start", "epoch_start"]
    assert model.events[0][1:] == (5, "cpu")
    assert [r["estimate"] for r in res.history] == [0.5, 1.0, 1.5]


def test_step_scheduler_halves_the_learning_rate(fs) -> None:
    _, res = _run(fs, scheduler="step:1:0.5", max_epochs=3, early_stop=10)
    assert [r["lr/main"] for r in res.history] == pytest.approx([0.025, 0.0125, 0.00625])


def test_nan_loss_and_bad_stage_are_clear_errors(fs) -> None:
    with pytest.raises(TrainingError, match="loss became nan at epoch 2"):
        _run(fs, nan_at_epoch=2)
    with pytest.raises(ValueError, match="names stage 'ghost'"):
        _run(fs, stage_without_group=True)
    with pytest.raises(UsageError, match="scheduler = 'step:x:0.5': expected a scheduler plateau:P:F"):
        _run(fs, scheduler="step:x:0.5")


def test_optimisers_use_the_fused_step_and_match_the_plain_one() -> None:
    from msa.pipeline.train.trainer import build_optimizers

    dims = Dims(4, 3, 5, 6, 7, 8)
    task = Task("mosi", -3.0, 3.0, "mosi")
    torch.manual_seed(0)
    fused_model = Lin(LinConfig(two_stages=True), dims, task)
    plain_model = Lin(LinConfig(two_stages=True), dims, task)
    plain_model.load_state_dict(fused_model.state_dict())
    optimizers, _ = build_optimizers(fused_model, fused_model.train_settings())
    assert set(optimizers) == {"main", "aux"} and all(o.defaults["fused"] for o in optimizers.values())
    plain = torch.optim.Adam([{"params": g.params, "lr": g.lr} for g in plain_model.param_groups()])
    batch = {"audio": torch.randn(8, 7, 3), "vision": torch.randn(8, 8, 5), "labels": torch.randn(8)}
    for _ in range(5):
        for model, opts in ((fused_model, list(optimizers.values())), (plain_model, [plain])):
            for o in opts:
                o.zero_grad()
            model.eval()
            model.loss(model(batch), batch, 1).loss.backward()
            for o in opts:
                o.step()
    for k, v in fused_model.state_dict().items():
        assert torch.allclose(v, plain_model.state_dict()[k], atol=1e-6), k


class AutocastProbe(Lin):
    """Records, per forward, whether it ran in training mode and under autocast."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.events.append(("forward", self.training, torch.is_autocast_enabled("cpu")))
        return super().forward(batch)


def test_mixed_precision_covers_training_steps_only(fs, monkeypatch) -> None:
    """Issue 15.1: with --amp, training steps autocast; validation, selection and test stay fp32."""
    import msa.pipeline.train.trainer as trainer

    monkeypatch.setattr(trainer, "amp_dtype_for", lambda dev, amp: torch.bfloat16 if amp else None)
    task = make_task("mosi", fs)
    for amp in (True, False):
        model = AutocastProbe(LinConfig(max_epochs=2, early_stop=5), fs.dims(), task)
        res = fit(model, fs.split("train"), fs.split("valid"), fs.split("test"), task, seed=1, device="cpu",
                  progress=False, log=lambda line: None, amp=amp)
        seen = {(training, cast) for kind, training, cast, *_ in (e for e in model.events if e[0] == "forward")}
        assert seen == ({(True, True), (False, False)} if amp else {(True, False), (False, False)})
        assert res.amp == ("bf16" if amp else "off")
