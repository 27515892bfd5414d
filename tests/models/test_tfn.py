"""TFN (MODELS.md 6.2) and the FeatureNets pieces it shares with LMF: subnets, time averaging, dropout."""
from __future__ import annotations

import pytest
import torch

from msa.models import build_config, build_model
from msa.models.base import Dims, Task
from msa.models.layers.ops import dropout, keep_scale
from msa.models.layers.seq import SubNet, TextSubNet, time_average
from msa.models.tfn import fusion_tensor
from msa.core.errors import UsageError
from feature_batches import feature_batch

MOSI = Task("mosi", -3.0, 3.0, "mosi")
PHQ8 = Task("phq8", 0.0, 24.0, "phq8")
DIMS = Dims(text=12, audio=5, vision=7, text_len=6, audio_len=9, vision_len=8, n_train=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    return feature_batch(DIMS, n, seed, lengths=True)


def test_fusion_tensor_size_and_flatten_order():
    torch.manual_seed(0)
    a, v, t = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 2)
    z = fusion_tensor(a, v, t)
    assert z.shape == (2, (3 + 1) * (4 + 1) * (2 + 1))
    a1, v1, t1 = (torch.cat([torch.ones(2, 1), x], 1) for x in (a, v, t))
    for ia in range(4):
        for iv in range(5):
            for it in range(3):
                idx = (ia * 5 + iv) * 3 + it
                torch.testing.assert_close(z[:, idx], a1[:, ia] * v1[:, iv] * t1[:, it])
    assert torch.equal(z[:, 0], torch.ones(2))  # the constant term
    torch.testing.assert_close(z[:, 1:3], t)  # t itself, then v and a blocks
    torch.testing.assert_close(z[:, 3:15:3], v)
    torch.testing.assert_close(z[:, 15::15], a)


def test_mosi_default_fusion_size():
    model = build_model("tfn", Dims(768, 5, 20, 50, 500, 375), MOSI)
    assert model.fusion_size == 33 * 129 * 33 == 140481
    assert model.post_fusion[0].in_features == 140481


def test_output_range_fixed_and_task():
    torch.manual_seed(0)
    model = build_model("tfn", DIMS, MOSI, build_config("tfn", "mosi", "tiny"))
    model.eval()
    with torch.no_grad():
        pred = model(make_batch())["pred"]
        assert (pred > -3).all() and (pred < 3).all()
        model.post_fusion[-1].bias.fill_(1e4)  # saturated logits stay within the fixed range
        assert (model(make_batch())["pred"] <= 3).all()
    with pytest.raises(UsageError, match="output_range"):
        build_model("tfn", DIMS, PHQ8, build_config("tfn", "mosi", "tiny"))
    phq = build_model("tfn", DIMS, PHQ8, build_config("tfn", "phq8", "tiny")).eval()
    with torch.no_grad():
        phq.post_fusion[-1].bias.fill_(-1e4)
        assert (phq(make_batch())["pred"] >= 0).all()
        phq.post_fusion[-1].bias.fill_(0.0)
        p = phq(make_batch())["pred"]
    assert ((p > 0) & (p < 24)).all() and p.max() > 3  # the task range, not (−3, 3)


def test_train_step_and_groups():
    torch.manual_seed(0)
    model = build_model("tfn", DIMS, MOSI, build_config("tfn", "mosi", "tiny"))
    (group,) = model.param_groups()
    assert group.weight_decay == 0 and len(group.params) == len(list(model.parameters()))
    batch = make_batch()
    model.train()
    model.loss(model(batch), batch, 1).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_time_average_padded_and_true_lengths():
    x = torch.tensor([[[1.0], [3.0], [0.0], [0.0]], [[2.0], [float("nan")], [0.0], [0.0]]])
    lens = torch.tensor([2, 1])
    padded = time_average(x, lens, padded_len=4, mode="padded")
    torch.testing.assert_close(padded, torch.tensor([[1.0], [0.0]]))  # (1+3)/4; NaN -> 0 as MMSA
    trimmed = time_average(x[:, :2], lens, padded_len=4, mode="padded")  # a loader that trimmed padding
    torch.testing.assert_close(trimmed[:1], padded[:1])
    torch.testing.assert_close(time_average(x, lens, mode="true"), torch.tensor([[2.0], [2.0]]))


def test_text_subnet_unrolled_path_equals_the_fused_lstm():
    torch.manual_seed(0)
    net = TextSubNet(6, 5, 3)
    x = torch.randn(4, 7, 6)
    y = net(x)  # grad enabled, input without grad: the unrolled path
    y.square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    ref = net.linear(net.rnn(x)[1][0][-1])
    ref.square().sum().backward()
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-5)


def test_text_subnet_dropout_is_inert_like_mmsa():
    torch.manual_seed(0)
    net = TextSubNet(6, 5, 3, dropout=0.9).train()
    x = torch.randn(4, 7, 6)
    torch.testing.assert_close(net(x), net(x))
    live = TextSubNet(6, 5, 3, dropout=0.9, inert_dropout=False).train()
    assert not torch.allclose(live(x), live(x))


def test_subnet_batchnorm_accepts_a_single_sample():
    net = SubNet(4, 3, 0.0).train()
    assert net(torch.randn(1, 4)).shape == (1, 3)


def test_fast_dropout_distribution():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.3, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    assert abs(keep_scale(0.3) - 1 / 0.7) < 1e-4  # p rounded to a multiple of 2^-16
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], keep_scale(0.3)), atol=0, rtol=0)
    assert dropout(x, 0.3, training=False) is x
    g = torch.ones(10, requires_grad=True)
    out = dropout(g, 0.5, training=True)
    out.sum().backward()
    torch.testing.assert_close(g.grad, out.detach())  # gradient flows through kept entries, scaled
