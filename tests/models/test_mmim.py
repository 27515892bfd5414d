"""MMIM mechanism tests (MODELS.md §3.5): CPC, MMILB bound and entropy, stage isolation, H schedule."""
from __future__ import annotations

import math

import pytest
import torch
from mi_fixtures import DIMS, changed, make_batch, optimisers, snapshot, step

from msa.models import build_config, build_model
from msa.models.base import Task
from msa.models.layers.mi import CPC, cpc_nce, gaussian_entropy, gaussian_lld

torch.set_num_threads(1)
MOSI = Task("mosi", -3.0, 3.0, "mosi")


def tiny(task: Task = MOSI, **overrides):
    torch.manual_seed(0)
    return build_model("mmim", DIMS, task, build_config("mmim", task.name, "tiny", overrides))


def test_cpc_nce_nonnegative_scale_invariant_and_drops_with_alignment():
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    nce = cpc_nce(x, x_hat)
    assert nce.item() >= 0
    assert cpc_nce(3.0 * x, 0.2 * x_hat).item() == pytest.approx(nce.item(), abs=1e-6)
    assert cpc_nce(x, x + 0.01 * x_hat).item() < nce.item()
    assert cpc_nce(x, x).item() >= 0  # even perfect alignment keeps the other samples in the denominator


def test_cpc_module_predicts_modality_from_fusion():
    cpc = CPC(dim_x=6, dim_f=4, layers=2)
    x, f = torch.randn(5, 6), torch.randn(5, 4)
    assert cpc(x, f).item() == pytest.approx(cpc_nce(x, cpc.net(f)).item())


def test_lld_nonpositive_and_zero_iff_mean_matches():
    g = torch.Generator().manual_seed(1)
    y, logvar = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert gaussian_lld(y, logvar, y).item() == 0.0
    assert gaussian_lld(y + 0.1 * torch.randn(6, 4, generator=g), logvar, y).item() < 0


def test_entropy_finite_when_full_rank_and_rises_with_spread():
    g = torch.Generator().manual_seed(2)
    pos, neg = torch.randn(9, 4, generator=g), torch.randn(7, 4, generator=g)
    h = gaussian_entropy(pos, neg)
    assert torch.isfinite(h)
    assert gaussian_entropy(2 * pos, 2 * neg).item() == pytest.approx(h.item() + 4 * math.log(2), abs=1e-4)
    assert not torch.isfinite(gaussian_entropy(pos[:4], neg))  # 4 rows in 4-D: singular covariance


def test_forward_fusion_is_tanh_vector_feeding_the_head():
    model = tiny().eval()
    out = model(make_batch(5, 0))
    assert out["pred"].shape == (5,) and out["fusion"].shape == (5, 16)
    assert out["fusion"].abs().max() <= 1.0
    assert torch.allclose(out["pred"], model.fusion_out(out["fusion"]).squeeze(-1))
    assert out["t"].shape == (5, model.text_encoder.hidden_size) and out["v"].shape == out["a"].shape == (5, 8)


def test_stages_and_param_groups():
    model = tiny()
    assert model.stages(0) == [("mmilb", 1), ("main", 1)]
    assert tiny(contrast=False).stages(3) == [("main", 1)]
    # MOSEI: the reference's stage 0 stops halfway through the batches (the trainer runs the first half)
    assert tiny(Task("mosei", -3.0, 3.0, "mosi")).stages(1) == [("mmilb", 0.5), ("main", 1)]
    assert build_config("mmim", "mosei", "paper").mmilb_passes == 0.5
    names = {id(p): n for n, p in model.named_parameters()}
    for g in model.param_groups():
        assert {names[id(p)].startswith("mi.") for p in g.params} == ({True} if g.stage == "mmilb" else {False})


def test_stage0_trains_only_mmilb_and_stage1_leaves_it_unchanged():
    model = tiny()
    opts = optimisers(model)
    batch = make_batch(16, 0)
    model.on_epoch_start(0)
    mmilb = {n for n, _ in model.named_parameters() if n.startswith("mi.")}
    before = snapshot(model)
    lo = step(model, opts, batch, 0, "mmilb")
    moved = changed(before, model)
    assert moved and moved <= mmilb
    assert lo.loss.item() == pytest.approx(-lo.logs["lld"]) and lo.logs["lld"] <= 0
    before = snapshot(model)
    step(model, opts, batch, 0, "main")
    moved = changed(before, model)
    assert moved and not moved & mmilb


def test_main_loss_composition_and_entropy_absent_for_first_two_batches():
    model = tiny()
    opts = optimisers(model)
    batches = [make_batch(16, i) for i in range(4)]
    for epoch in range(2):
        model.on_epoch_start(epoch)
        logs = [step(model, opts, b, epoch, "main") for b in batches]
        assert ["H" in lo.logs for lo in logs] == [False, False, True, True]
        for lo in logs:
            c = model.config
            expected = (lo.logs["task"] + c.alpha * lo.logs["nce"] - c.beta * lo.logs["lld"]
                        - c.beta * lo.logs.get("H", 0.0))
            assert lo.loss.item() == pytest.approx(expected, abs=1e-4)
            assert lo.logs["nce"] >= 0 and lo.logs["lld"] <= 0


def test_entropy_groups_use_threshold_and_skip_small_groups():
    model = tiny(h_threshold=10.0)
    opts = optimisers(model)
    model.on_epoch_start(0)
    low = [make_batch(16, i, 0.0, 9.0) for i in range(3)]  # no label above the threshold
    assert ["H" in step(model, opts, b, 0, "main").logs for b in low] == [False, False, False]
    mixed = make_batch(16, 5, 0.0, 24.0)
    mixed["labels"][:8] = 2.0
    mixed["labels"][8:] = 20.0
    model.on_epoch_start(1)
    assert ["H" in step(model, opts, mixed, 1, "main").logs for _ in range(3)] == [False, False, True]


def test_eval_loss_is_task_only_and_phq8_preset():
    model = tiny(Task("phq8", 0.0, 24.0, "phq8")).eval()
    assert model.config.label_scale == 25.0 and model.train_settings().select == "max:CCC"
    batch = make_batch(6, 0, 0.0, 24.0)
    out = model(batch)
    lo = model.loss(out, batch, 0, "main")
    assert set(lo.logs) == {"task"}
    assert lo.loss.item() == pytest.approx((out["raw"] - batch["labels"] / 25.0).abs().mean().item(), abs=1e-6)


def test_stage0_clips_over_every_gradient_like_the_reference():
    """Issue 15.6: the MMILB stage does not detach the features, so the trainer's clip-by-norm sees the
    encoders' gradients too (the reference clips model.parameters()); only MMILB's are then kept."""
    from msa.models.base import TrainSettings
    from msa.pipeline.train.trainer import train_pass

    class OneBatch(list):
        device = torch.device("cpu")

    model = tiny()
    model.on_epoch_start(1)
    seen: dict[str, torch.Tensor] = {}
    keep = model.after_backward

    def spy(out, batch, epoch):
        seen.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        keep(out, batch, epoch)

    model.after_backward = spy
    clip = 1e-3
    train_pass(model, OneBatch([make_batch(16, 0)]), optimisers(model)["mmilb"], "mmilb", 1,
               TrainSettings(clip_norm=clip), None, None)
    assert any(n.startswith("enc_v.") for n in seen) and any(n.startswith("text_encoder.") for n in seen)
    norm = lambda names: torch.linalg.vector_norm(torch.stack([seen[n].norm() for n in names])).item()  # noqa: E731
    mi = [n for n in seen if n.startswith("mi.")]
    assert norm(list(seen)) == pytest.approx(clip, rel=1e-3)  # the clip scaled all gradients together
    assert norm(mi) < 0.99 * clip  # so MMILB's share is smaller than the clip value
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("mi."))
