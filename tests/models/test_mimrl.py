"""MIMRL mechanism tests (MODELS.md §2.6, §2.8): stages, memory, isolation, signs, reporting."""
from __future__ import annotations

import pytest
import torch
from mi_fixtures import DIMS, changed, make_batch, optimisers, snapshot, step

from msa.models import build_config, build_model
from msa.models.base import Task
from msa.models.mimrl import INFO_ORDER, ccc_loss, information_terms, stage2_loss
from msa.core.errors import UsageError

torch.set_num_threads(1)
MOSI = Task("mosi", -3.0, 3.0, "mosi")
PHQ8 = Task("phq8", 0.0, 24.0, "phq8")


def tiny(task: Task = MOSI, **overrides):
    torch.manual_seed(0)
    return build_model("mimrl", DIMS, task, build_config("mimrl", task.name, "tiny", overrides))


def run_epoch(model, opts, batches, epoch):
    model.on_epoch_start(epoch)
    logs = []
    for stage, passes in model.stages(epoch):
        for _ in range(passes):
            logs += [(stage, step(model, opts, b, epoch, stage)) for b in batches]
    return logs, model.on_epoch_end(epoch)


def test_forward_outputs_and_classifier_reads_fused_vector():
    model = tiny().eval()
    with torch.no_grad():
        model.classifier.bias.fill_(5.0)
    out = model(make_batch(6, 0))
    assert out["pred"].shape == (6,) and (out["pred"] > 3.0).all()  # sentiment outputs are not clipped
    for k in ("F", "T", "A", "V"):
        assert out[k].shape == (6, 16)
    assert torch.allclose(out["pred"], model.classifier(out["F"]).squeeze(-1))


def test_stages_schedule_waits_for_memory():
    model = tiny()
    model.on_train_start(None)
    assert model.stages(1) == [("main", 1)]  # first epoch: no memory, no estimator stage
    opts = optimisers(model)
    run_epoch(model, opts, [make_batch(16, 0)], 1)
    assert model.stages(2) == [("vmi", model.config.stage1_n), ("main", 1)]
    model.on_train_start(None)  # a new fit starts from an empty memory
    assert model.memory is None and model.stages(1) == [("main", 1)]


def test_param_groups_partition_estimators_from_main():
    model = tiny()
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [id(p) for g in groups for p in g.params]
    assert len(seen) == len(set(seen)) == sum(1 for p in model.parameters() if p.requires_grad)
    for g in groups:
        est = {names[id(p)].startswith(("vmi.", "vcmi.")) for p in g.params}
        assert est == ({True} if g.stage == "vmi" else {False})
    lrs = {g.name: g.lr for g in groups}
    assert lrs["bert"] == pytest.approx(model.config.lr * model.config.bert_lr_rate)


def test_first_epoch_is_task_loss_and_fills_memory():
    model = tiny()
    opts = optimisers(model)
    batches = [make_batch(16, i) for i in range(2)]
    logs, report = run_epoch(model, opts, batches, 1)
    assert [s for s, _ in logs] == ["main", "main"]
    assert all(lo.loss.item() == pytest.approx(lo.logs["task"]) for _, lo in logs)
    assert report == {}
    mem = model.memory
    assert mem is not None and {k: v.shape[0] for k, v in mem.items()} == dict.fromkeys("CFTAV", 32)
    assert torch.allclose(mem["C"].flatten(), torch.cat([b["labels"] for b in batches]))
    assert not any(v.requires_grad for v in mem.values())


def test_stage1_trains_only_estimators_and_stage2_leaves_them_unchanged():
    model = tiny()
    opts = optimisers(model)
    batches = [make_batch(16, i) for i in range(2)]
    run_epoch(model, opts, batches, 1)
    est = {n for n, _ in model.named_parameters() if n.startswith(("vmi.", "vcmi."))}
    before = snapshot(model)
    step(model, opts, batches[0], 2, "vmi")
    moved = changed(before, model)
    assert moved and moved <= est
    before = snapshot(model)
    step(model, opts, batches[1], 2, "main")
    moved = changed(before, model)
    assert moved and not moved & est


ESTIMATE_NAMES = ("f_t", "f_a", "f_v", "t_a", "t_v", "ac_t", "ta_c", "vc_t", "tv_c", "tc_a", "tc_v")


def test_stage2_loss_subtracts_weighted_information_and_epoch_end_reports_means(monkeypatch):
    model = tiny(c2=(0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18))
    opts = optimisers(model)
    batches = [make_batch(16, i) for i in range(2)]
    run_epoch(model, opts, batches, 1)
    values = iter([0.5, 1.5])  # the two batches get different fixed estimates
    fixed: list[dict[str, torch.Tensor]] = []

    def fake_estimates(feats):
        v = next(values)
        est = {n: torch.tensor(v + 0.1 * i) + 0 * feats["F"].sum() for i, n in enumerate(ESTIMATE_NAMES)}
        fixed.append(est)
        return est, {}

    monkeypatch.setattr(model, "estimates", fake_estimates)
    model.on_epoch_start(2)
    losses = [step(model, opts, b, 2, "main") for b in batches]
    report = model.on_epoch_end(2)
    for lo, est in zip(losses, fixed):
        info = information_terms(est)
        expected = lo.logs["task"] - sum(c * info[k].item() for c, k in zip(model.config.c2, INFO_ORDER))
        assert lo.loss.item() == pytest.approx(expected, abs=1e-5)
    for k in INFO_ORDER:
        assert report[k] == pytest.approx(sum(information_terms(e)[k].item() for e in fixed) / 2, abs=1e-6)
    assert report["cmi_ta_c"] == pytest.approx((fixed[0]["ta_c"].item() + fixed[1]["ta_c"].item()) / 2)


def test_real_estimates_are_reported_every_epoch_after_the_first():
    model = tiny()
    opts = optimisers(model)
    batches = [make_batch(16, i) for i in range(2)]
    run_epoch(model, opts, batches, 1)
    logs, report = run_epoch(model, opts, batches, 2)
    assert [s for s, _ in logs] == ["vmi"] * 2 * model.config.stage1_n + ["main"] * 2
    assert set(INFO_ORDER) <= set(report)
    assert {f"cmi_{n}" for n in ESTIMATE_NAMES[5:]} <= set(report)
    assert all(torch.isfinite(torch.tensor(v)) for v in report.values())
    assert report["I_comp"] == pytest.approx(report["cmi_ta_c"] + report["cmi_tv_c"], abs=1e-5)


def test_sign_of_conditional_terms_in_total_loss():
    c2 = (0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18)
    est = {k: torch.tensor(0.3, requires_grad=True)
           for k in ("f_t", "f_a", "f_v", "t_a", "t_v", "ac_t", "ta_c", "vc_t", "tv_c", "tc_a", "tc_v")}
    stage2_loss(torch.tensor(1.0), est, c2).backward()
    assert est["ta_c"].grad.item() == pytest.approx(c2[4] + c2[5] - c2[7])
    assert est["tv_c"].grad.item() == pytest.approx(c2[4] + c2[6] - c2[7])
    assert est["t_a"].grad.item() == pytest.approx(-c2[3])
    assert est["f_v"].grad.item() == pytest.approx(-c2[2])
    assert est["tc_a"].grad.item() == pytest.approx(-c2[4])
    assert est["ac_t"].grad.item() == pytest.approx(-c2[5])
    # equal weights: complementary information ends up minimised (+c on I(T;A|C))
    for v in est.values():
        v.grad = None
    stage2_loss(torch.tensor(1.0), est, (0.1,) * 8).backward()
    assert est["ta_c"].grad.item() == pytest.approx(0.1)
    info = information_terms({k: v.detach() for k, v in est.items()})
    assert info["I_comp"].item() == pytest.approx(0.6) and info["I_inv"].item() == pytest.approx(0.6)


def test_label_block_is_constant_across_columns():
    model = tiny()
    opts = optimisers(model)
    batches = [make_batch(16, i) for i in range(2)]
    run_epoch(model, opts, batches, 1)
    seen = []
    hook = model.vcmi["ta_c"].classifier.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    model.train()
    model.loss(model(batches[0]), batches[0], 2, "main")
    hook.remove()
    c_block = seen[0][:, 32:48]  # rows are [T (16) | A (16) | C tiled to 16]
    assert torch.equal(c_block, c_block[:, :1].expand_as(c_block))
    n = seen[0].shape[0] // 2
    assert torch.allclose(c_block[:n, 0], batches[0]["labels"][:n])


def test_eval_mode_returns_task_loss_and_keeps_memory():
    model = tiny()
    model.eval()
    batch = make_batch(8, 0)
    lo = model.loss(model(batch), batch, 3, "main")
    assert set(lo.logs) == {"task"} and model.on_epoch_end(3) == {} and model.memory is None


def test_phq8_preset_scales_output_and_selects_ccc():
    model = tiny(PHQ8)
    c = model.config
    assert (c.loss, c.label_scale, c.activation) == ("ccc", 25.0, "relu")
    assert model.train_settings().select == "max:CCC"
    model.train()
    out = model(make_batch(4, 0, 0.0, 24.0))
    assert torch.allclose(out["pred"], out["raw"] * 25.0)
    with torch.no_grad():
        model.classifier.bias.fill_(5.0)  # raw ~5 -> 125 before clamping
    model.eval()
    out = model(make_batch(4, 0, 0.0, 24.0))
    assert (out["raw"] * 25.0 > 24.0).all() and torch.equal(out["pred"], torch.full((4,), 24.0))


def test_ccc_loss_properties():
    x = torch.tensor([0.1, 0.4, 0.3, 0.9])
    assert ccc_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert ccc_loss(x + 0.5, x).item() > 0.1  # a shift is penalised
    assert ccc_loss(-x, x).item() > ccc_loss(x * 0.5, x).item()


def test_bound_switch_and_config_errors():
    model = tiny(bound="nwj", critic="concat")
    assert {m.bound for m in model.vmi.values()} == {"nwj"}
    with pytest.raises(UsageError, match="bound"):
        build_config("mimrl", "mosi", "tiny", {"bound": "mine"})
    with pytest.raises(UsageError, match="c2 needs 8"):
        build_config("mimrl", "mosi", "tiny", {"c2": [0.1, 0.2]})
    with pytest.raises(UsageError, match="in == out"):
        tiny(res_project="0-0")  # the tiny sizes shrink the time axis, which needs the projection
    with pytest.raises(UsageError, match="d_hiddens"):
        build_config("mimrl", None, "tiny", {"d_hiddens": "4-3-16", "d_outs": "4-3-16=2-3-16"})


@pytest.mark.parametrize("name", ["mimrl", "mmim"])
def test_phq8_clamp_at_evaluation_is_a_flag(name: str):
    """Issue 15.5: by default PHQ-8 predictions are clamped to [0, 24] at evaluation; the reference code
    does not clamp, so ``clamp_phq8=False`` (the paper presets) leaves them as predicted."""
    batch = make_batch(6, 0, 0.0, 24.0)
    preds = {}
    for clamp in (True, False):
        torch.manual_seed(0)
        model = build_model(name, DIMS, PHQ8, build_config(name, "phq8", "tiny", {"clamp_phq8": clamp})).eval()
        head = model.classifier if name == "mimrl" else model.fusion_out
        with torch.no_grad():
            head.bias.fill_(2.0)  # raw 2 -> 2 * 25 = 50 PHQ-8 points, beyond the scale
            preds[clamp] = model(batch)["pred"]
    assert float(preds[True].max()) <= 24.0 and float(preds[False].max()) > 24.0
    assert torch.equal(preds[True], preds[False].clamp(0, 24))
