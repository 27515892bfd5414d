"""Self-MM: ULGM mechanism properties (MODELS.md 1.8), hooks, parameter groups, and the packed LSTM."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from msa.models import build_config, build_model
from msa.models.base import Dims, Task
from msa.models.layers.seq import PackedRNN
from msa.models.layers.ulgm import ULGM, class_centres, generate_labels, momentum_update, relative_distance
from msa.models.self_mm import SelfMM, trim_bert_padding
from msa.core.errors import DataError

MOSI = Task("mosi", -3.0, 3.0, "mosi")
PHQ8 = Task("phq8", 0.0, 24.0, "phq8")
DIMS = Dims(text=768, audio=5, vision=7, text_len=12, audio_len=9, vision_len=6, n_train=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_batch(n: int = 10, seed: int = 0, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, DIMS.text_len, (n,), generator=g)
    mask = (torch.arange(DIMS.text_len)[None] < lens[:, None]).long()
    ids = torch.randint(1000, 5000, (n, DIMS.text_len), generator=g) * mask
    ids[:, 0] = 101
    return {
        "text_bert": torch.stack([ids, mask, torch.zeros_like(ids)], 1),
        "audio": torch.randn(n, DIMS.audio_len, DIMS.audio, generator=g),
        "audio_lengths": torch.randint(1, DIMS.audio_len + 1, (n,), generator=g),
        "vision": torch.randn(n, DIMS.vision_len, DIMS.vision, generator=g),
        "vision_lengths": torch.randint(1, DIMS.vision_len + 1, (n,), generator=g),
        "labels": torch.rand(n, generator=g) * 6 - 3 if labels is None else labels,
        "index": torch.arange(n),
    }


def tiny_model(task: Task = MOSI, **overrides) -> SelfMM:
    torch.manual_seed(0)
    return build_model("self_mm", DIMS, task, build_config("self_mm", task.name, "tiny", overrides))


# ---- pure ULGM formulas ---------------------------------------------------------------------

def test_generated_label_test_vector_and_momentum():
    y = generate_labels(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([1.0]), -3, 3)
    assert y.item() == pytest.approx(1.75, abs=1e-6)  # 0.5·2·1 + 0.5·(1 + 1 − 0.5)
    assert momentum_update(torch.tensor([1.0]), y, epoch=2).item() == pytest.approx(1.5, abs=1e-6)
    for n in range(1, 30):  # coefficients sum to one: a constant stays constant
        assert momentum_update(torch.tensor([0.7]), torch.tensor([0.7]), n).item() == pytest.approx(0.7, abs=1e-6)


def test_equal_relative_distances_give_the_multimodal_label():
    y_m = torch.tensor([-2.5, -0.3, 0.0, 0.8, 2.9])
    delta = torch.tensor([0.4, -1.2, 2.0, 0.05, 3.0])
    torch.testing.assert_close(generate_labels(y_m, delta, delta, -3, 3), y_m, atol=1e-6, rtol=0)
    old = y_m.clone()
    for n in range(2, 6):  # a bank equal to y_m stays equal to y_m at any epoch
        old = momentum_update(old, generate_labels(y_m, delta, delta, -3, 3), n)
    torch.testing.assert_close(old, y_m, atol=1e-6, rtol=0)


def test_monotonicity_and_clamp():
    y_m = torch.tensor([1.0])
    assert generate_labels(y_m, torch.tensor([0.5]), torch.tensor([0.9]), -10, 10).item() > 1.0
    assert generate_labels(y_m, torch.tensor([0.5]), torch.tensor([0.2]), -10, 10).item() < 1.0
    big = generate_labels(torch.full((50,), 2.9), torch.full((50,), 0.01), torch.linspace(-50, 50, 50), -3, 3)
    assert big.min() >= -3 and big.max() <= 3 and big.max() == 3 and big.min() == -3


def test_relative_distance_uses_plain_l2_norms():
    f = torch.tensor([[3.0, 4.0]])
    d = relative_distance(f, torch.zeros(2), torch.tensor([3.0, 0.0]))  # d_p = 5, d_n = 4
    assert d.item() == pytest.approx((4 - 5) / (5 + 1e-8))


def test_centres_exclude_zero_labels():
    bank = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 10.0], [0.0, -4.0]])
    labels = torch.tensor([1.0, 2.0, 0.0, -1.0])
    pos, neg = class_centres(bank, labels, exclude_zero=True)
    torch.testing.assert_close(pos, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(neg, torch.tensor([0.0, -4.0]))
    pos_ge, _ = class_centres(bank, labels, exclude_zero=False)  # original Self-MM repo: y >= 0
    torch.testing.assert_close(pos_ge, torch.tensor([4.0 / 3, 10.0 / 3]))
    pos_empty, neg_empty = class_centres(bank, torch.zeros(4))
    assert torch.equal(pos_empty, torch.zeros(2)) and torch.equal(neg_empty, torch.zeros(2))


# ---- ULGM state ------------------------------------------------------------------------------

def test_ulgm_schedule_epoch_one_frozen_then_formula():
    torch.manual_seed(0)
    dims = {"f": 4, "t": 3, "a": 2, "v": 2}
    u = ULGM(dims, -3, 3)
    u.reset(6)
    y = torch.tensor([2.0, -1.0, 0.5, -2.5, 1.5, -0.5])
    u.fill(torch.arange(6), y)
    feats = {b: torch.randn(6, d) for b, d in dims.items()}
    u.step(feats, torch.arange(6), epoch=1)
    for b in "ftav":  # epoch 1: labels unchanged, unimodal weights tanh(0) = 0
        assert torch.equal(u.targets(torch.arange(6))[b], y)
    assert all(torch.equal(w, torch.zeros(6)) for w in u.weights(torch.arange(6)).values())
    torch.testing.assert_close(u.pos_t, feats["t"][y > 0].mean(0))  # centres over the whole bank
    torch.testing.assert_close(u.neg_a, feats["a"][y < 0].mean(0))
    centres = {b: (u._get("pos", b).clone(), u._get("neg", b).clone()) for b in "ftav"}
    new = {b: torch.randn(3, d) for b, d in dims.items()}
    idx = torch.tensor([0, 3, 4])
    u.step(new, idx, epoch=3)
    delta_f = relative_distance(new["f"], *centres["f"])
    for s in "tav":  # the update uses the centres from before this batch
        delta_s = relative_distance(new[s], *centres[s])
        want = momentum_update(y[idx], generate_labels(y[idx], delta_f, delta_s, -3, 3), 3)
        torch.testing.assert_close(u.targets(idx)[s], want)
    assert torch.equal(u.label_f, y)  # Y_f never changes
    w = torch.stack(list(u.weights(torch.arange(6)).values()))
    assert (w >= 0).all() and (w < 1).all() and (w[:, idx] > 0).any()


def test_ulgm_state_is_not_a_parameter_and_not_saved():
    model = tiny_model()
    model.on_train_start([make_batch()])
    assert not list(model.ulgm.parameters())
    assert all(not b.requires_grad for b in model.ulgm.buffers())
    assert not [k for k in model.state_dict() if k.startswith("ulgm.")]


def test_phq8_labels_are_centred_and_clamped_to_the_range():
    model = tiny_model(PHQ8)
    assert model.ulgm.centre == 10.0 and (model.ulgm.low, model.ulgm.high) == (0.0, 24.0)
    u = model.ulgm
    u.reset(4)
    u.fill(torch.arange(4), torch.tensor([2.0, 8.0, 15.0, 22.0]))
    u.update_centres()
    feats = {b: torch.randn(4, d) * 50 for b, d in u.feature_dims.items()}
    u.step(feats, torch.arange(4), epoch=1)
    assert bool((u.pos_f != 0).any()) and bool((u.neg_f != 0).any())  # both sides of the cut-off populated
    u.step({b: -f for b, f in feats.items()}, torch.arange(4), epoch=2)
    for s in "tav":
        assert float(u.targets(torch.arange(4))[s].min()) >= 0 and float(u.targets(torch.arange(4))[s].max()) <= 24


# ---- the model ------------------------------------------------------------------------------

def test_forward_loss_and_hooks():
    model = tiny_model()
    batch = make_batch()
    model.on_train_start([{k: v[:5] for k, v in batch.items()}, {k: v[5:] for k, v in batch.items()}])
    assert torch.equal(model.ulgm.label_t, batch["labels"])
    model.train()
    out = model(batch)
    assert out["pred"].shape == (10,) and out["feat_f"].shape == (10, model.config.post_fusion_dim)
    lo = model.loss(out, batch, epoch=1)
    assert lo.loss.item() == pytest.approx((out["pred"] - batch["labels"]).abs().mean().item(), abs=1e-6)
    lo.loss.backward()
    model.after_backward(out, batch, 1)
    assert torch.equal(model.ulgm.label_a, batch["labels"])
    out = model(batch)
    model.after_backward(out, batch, 2)
    assert not torch.equal(model.ulgm.label_a, batch["labels"])
    lo = model.loss(model(batch), batch, epoch=2)
    assert lo.logs["loss_a"] > 0 and lo.loss.item() > lo.logs["loss_m"]
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert model.loss(out, batch, 2).loss.item() == pytest.approx((out["pred"] - batch["labels"]).abs().mean().item())


def test_training_without_index_is_a_clear_error():
    model = tiny_model()
    batch = make_batch()
    del batch["index"]
    model.train()
    with pytest.raises(DataError, match="index"):
        model.loss(model(batch), batch, 1)


def test_param_groups_bert_decay_split_and_learning_rates():
    model = tiny_model(**{f.name: getattr(SelfMM.Config(), f.name) for f in dataclasses.fields(SelfMM.Config)
                          if f.name.startswith(("lr_", "wd_"))})
    groups = {g.name: g for g in model.param_groups()}
    assert list(groups) == ["bert", "bert_no_decay", "audio", "video", "other"]
    names = {id(p): n for n, p in model.named_parameters()}
    bert_ids = {id(p) for p in model.text_model.parameters()}
    for g in ("bert", "bert_no_decay"):
        assert groups[g].lr == 5e-5 and all(id(p) in bert_ids for p in groups[g].params)
    assert groups["bert_no_decay"].weight_decay == 0 and groups["bert"].weight_decay == 1e-3
    assert all(("LayerNorm" in names[id(p)] or "bias" in names[id(p)]) for p in groups["bert_no_decay"].params)
    assert not any("LayerNorm" in names[id(p)] or "bias" in names[id(p)] for p in groups["bert"].params)
    assert all(names[id(p)].startswith("audio_model.") for p in groups["audio"].params)
    assert all(names[id(p)].startswith("heads.") for p in groups["other"].params)
    grouped = [id(p) for g in groups.values() for p in g.params]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))
    frozen = tiny_model(finetune=False)
    assert [g.name for g in frozen.param_groups()] == ["audio", "video", "other"]


def test_trimming_bert_padding_keeps_cls():
    model = tiny_model().eval()
    batch = make_batch()
    ids = batch["text_bert"]
    trimmed = trim_bert_padding(ids)
    assert trimmed.shape[-1] == int(ids[:, 1].sum(1).max()) < ids.shape[-1]
    with torch.no_grad():
        torch.testing.assert_close(model.text_model(trimmed)[:, 0], model.text_model(ids)[:, 0], atol=1e-5, rtol=0)


# ---- the packed LSTM helper -----------------------------------------------------------------

@pytest.mark.parametrize("cell, layers", [("lstm", 1), ("lstm", 2), ("gru", 1)])
def test_packed_rnn_matches_a_packed_sequence(cell: str, layers: int):
    torch.manual_seed(0)
    rnn = PackedRNN(4, 6, num_layers=layers, cell=cell)
    x = torch.randn(5, 9, 4)
    x[0, 3:] = float("nan")  # padding must never leak into a sample's result or gradients
    lens = torch.tensor([3, 9, 1, 7, 5])
    outputs, final = rnn(x, lens, return_outputs=True)
    packed = pack_padded_sequence(torch.nan_to_num(x), lens, batch_first=True, enforce_sorted=False)
    state = rnn.rnn(packed)[1]
    want = (state[0] if isinstance(state, tuple) else state)[-1]
    torch.testing.assert_close(final, want, atol=1e-6, rtol=0)
    assert outputs.shape == (5, 9, 6) and torch.equal(outputs[2, 1:], torch.zeros(8, 6))
    final.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in rnn.parameters())


def test_packed_rnn_bidirectional_and_zero_lengths():
    torch.manual_seed(0)
    rnn = PackedRNN(3, 4, bidirectional=True)
    x = torch.randn(3, 6, 3)
    _, final = rnn(x, torch.tensor([0, 6, 2]))
    assert final.shape == (3, 8)
    _, one = rnn(x[:1, :1], torch.tensor([1]))  # length 0 is read as one step
    torch.testing.assert_close(final[:1], one)


def test_two_batches_through_the_trainer_centres_and_weighted_loss():
    """Issue 15.9: driven by the trainer's own pass (2 batches of 5), recomputed here from the recorded
    features with the paper's formulas: after each batch of epoch 2 the centres are means over the WHOLE
    bank split by each branch's OWN u-labels; at epoch 3 the loss is exactly the tanh-weighted L1."""
    from msa.pipeline.train.trainer import build_optimizers, train_pass

    class Loader(list):
        device = torch.device("cpu")

    y = torch.tensor([0.05, -0.05, 0.1, -0.1, 0.15, -0.15, 0.2, -0.2, 0.05, -0.05])  # near 0: signs can flip
    full = make_batch(labels=y)
    loader = Loader([{k: v[:5] for k, v in full.items()}, {k: v[5:] for k, v in full.items()}])
    model = tiny_model()
    opt = build_optimizers(model, model.train_settings())[0]["main"]
    seen: list[tuple[dict, dict]] = []
    keep_after, keep_loss = model.after_backward, model.loss

    def after(out, batch, epoch):
        keep_after(out, batch, epoch)
        seen.append(({k: v.detach().clone() for k, v in out.items()},
                     {f"{k}_{b}": model.ulgm._get(k, b).clone() for k in ("label", "pos", "neg") for b in "ftav"}))

    losses: list[tuple[dict, float]] = []

    def loss(out, batch, epoch, stage="main"):
        lo = keep_loss(out, batch, epoch, stage)
        losses.append(({k: v.detach().clone() for k, v in out.items()}, lo.loss.item()))
        return lo

    model.after_backward, model.loss = after, loss
    model.on_train_start(loader)
    for epoch in (1, 2):
        train_pass(model, loader, opt, "main", epoch, model.train_settings(), None, None)

    def centres(bank: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return bank[labels > 0].mean(0), bank[labels < 0].mean(0)

    def delta(f: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        d_p, d_n = (f - pos).norm(dim=1), (f - neg).norm(dim=1)
        return (d_n - d_p) / (d_p + 1e-8)

    feat = {b: torch.cat([seen[0][0][f"feat_{b}"], seen[1][0][f"feat_{b}"]]) for b in "ftav"}  # bank after epoch 1
    cent = {b: centres(feat[b], y) for b in "ftav"}
    labels = {b: y.clone() for b in "ftav"}
    flipped = False
    for i, rows in ((2, slice(0, 5)), (3, slice(5, 10))):  # epoch 2, batch 1 then batch 2
        out = seen[i][0]
        d_f = delta(out["feat_f"], *cent["f"])
        for s in "tav":
            d_s = delta(out[f"feat_{s}"], *cent[s])
            ym = y[rows]
            new = (0.5 * d_s / (d_f + 1e-8) * ym + 0.5 * (ym + d_s - d_f)).clamp(-3, 3)
            labels[s][rows] = ym / 3 + 2 / 3 * new  # momentum at n = 2
            flipped |= bool((torch.sign(labels[s]) != torch.sign(y)).any())
        for b in "ftav":
            feat[b][rows] = out[f"feat_{b}"]
            cent[b] = centres(feat[b], labels[b])
            state = seen[i][1]
            torch.testing.assert_close(state[f"label_{b}"], labels[b])
            torch.testing.assert_close(state[f"pos_{b}"], cent[b][0])
            torch.testing.assert_close(state[f"neg_{b}"], cent[b][1])
    assert flipped  # some u-label changed sign, so centres by the fusion labels would have failed above

    losses.clear()
    train_pass(model, Loader(loader[:1]), opt, "main", 3, model.train_settings(), None, None)
    out, value = losses[0]
    want = (out["pred_f"] - y[:5]).abs().mean()
    for s in "tav":
        w = torch.tanh((labels[s][:5] - y[:5]).abs())
        want = want + (w * (out[f"pred_{s}"] - labels[s][:5]).abs()).mean()
    assert value == pytest.approx(want.item(), rel=1e-5)
    assert value > (out["pred_f"] - y[:5]).abs().mean().item()  # the weights are not all zero
