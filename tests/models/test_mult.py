"""MulT (MODELS.md 6.4): the future mask, time-permutation equivariance, widths, conv shrink, and the
blocked attention kernel it trains with on CPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msa.models import build_config, build_model
from msa.models.base import Dims, Task
from msa.models.layers.blocked_attention import blocked_attention
from msa.models.layers.transformer import MultiheadAttention, TransformerEncoder, future_mask, sdpa_attention
from msa.models.mult import MulT
from msa.core.errors import DataError
from feature_batches import feature_batch

MOSI = Task("mosi", -3.0, 3.0, "mosi")
DIMS = Dims(text=12, audio=5, vision=7, text_len=9, audio_len=14, vision_len=11, n_train=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_batch(n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    return feature_batch(DIMS, n, seed)


def tiny(**overrides) -> MulT:
    torch.manual_seed(0)
    return build_model("mult", DIMS, MOSI, build_config("mult", "mosi", "tiny", overrides))


@pytest.mark.parametrize("len_q, len_k", [(5, 5), (4, 9), (9, 4), (7, 6)])
@pytest.mark.parametrize("train", [False, True])
def test_step_i_never_attends_beyond_the_offset(len_q: int, len_k: int, train: bool):
    torch.manual_seed(0)
    attn = MultiheadAttention(8, 2, attn_dropout=0.3).train(train)  # training on CPU: the blocked kernel
    q, k = torch.randn(2, len_q, 8), torch.randn(2, len_k, 8, requires_grad=True)
    out = attn(q, k, k, masked=True)
    offset = 1 + abs(len_k - len_q)
    for i in range(len_q):
        (grad,) = torch.autograd.grad(out[:, i].sum(), k, retain_graph=True)
        seen = grad.abs().sum(dim=(0, 2)) > 0
        assert not seen[i + offset:].any(), f"row {i} sees a key at or beyond {i + offset}"
        assert seen[: min(len_k, i + offset)].all()
    allowed = future_mask(len_q, len_k)
    if allowed is not None:
        assert torch.equal(allowed, torch.arange(len_k)[None] - torch.arange(len_q)[:, None] < offset)


def test_crossmodal_stacks_are_time_permutation_equivariant_without_mask():
    model = tiny(attn_mask=False, conv_kernel_l=1, conv_kernel_a=1, conv_kernel_v=1).eval()
    batch = make_batch()
    perms = {"text": torch.randperm(DIMS.text_len), "audio": torch.randperm(DIMS.audio_len),
             "vision": torch.randperm(DIMS.vision_len)}
    shuffled = {k: (v[:, perms[k]] if k in perms else v) for k, v in batch.items()}
    with torch.no_grad():
        ref, got = model.encode(batch, last_only=False), model.encode(shuffled, last_only=False)
    for m, key in (("l", "text"), ("a", "audio"), ("v", "vision")):
        torch.testing.assert_close(got[m], ref[m][:, perms[key]], atol=1e-5, rtol=1e-5)
    masked = tiny(conv_kernel_l=1, conv_kernel_a=1, conv_kernel_v=1).eval()  # the mask breaks the symmetry
    with torch.no_grad():
        a, b = masked.encode(batch, last_only=False)["a"], masked.encode(shuffled, last_only=False)["a"]
    assert not torch.allclose(b, a[:, perms["audio"]], atol=1e-4)


def test_widths_conv_shrink_and_readout_shortcut():
    model = tiny(conv_kernel_l=3, conv_kernel_a=4, conv_kernel_v=2).eval()
    assert model.proj1.in_features == model.out_layer.in_features == 6 * model.config.dim
    batch = make_batch()
    x = model.project(batch)
    assert x["l"].shape[1] == DIMS.text_len - 2 and x["a"].shape[1] == DIMS.audio_len - 3
    assert x["v"].shape[1] == DIMS.vision_len - 1
    with torch.no_grad():
        full, last = model.encode(batch, last_only=False), model.encode(batch, last_only=True)
    for m in "lav":
        assert full[m].shape[-1] == 2 * model.config.dim and last[m].shape[1] == 1
        torch.testing.assert_close(last[m][:, 0], full[m][:, -1], atol=1e-5, rtol=1e-5)
    same_width = build_model("mult", Dims(8, 5, 7, 9, 14, 11), MOSI, build_config("mult", "mosi", "tiny"))
    assert "l" not in same_width.proj and same_width.project(make_batch())["l"].shape[1] == 9  # no conv, no shrink
    with pytest.raises(DataError, match="conv_kernel_a"):
        model.project({**batch, "audio": batch["audio"][:, :2]})


def test_training_settings_and_groups():
    model = tiny()
    s = build_model("mult", DIMS, MOSI).train_settings()
    assert (s.clip_value, s.update_every, s.scheduler, s.optimizer) == (0.6, 8, "plateau:5:0.1", "adam")
    (group,) = model.param_groups()
    assert group.weight_decay == 0 and len(group.params) == len(list(model.parameters()))
    batch = make_batch()
    model.train()
    model.loss(model(batch), batch, 1).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_encoder_positions_flag_changes_outputs():
    torch.manual_seed(0)
    enc = TransformerEncoder(8, 2, 1, position_embedding=False).eval()
    x = torch.randn(2, 5, 8)
    base = enc(x)
    enc.position_embedding = True
    assert not torch.allclose(enc(x), base)


# ---- blocked attention ----------------------------------------------------------------------

@pytest.mark.parametrize("len_q, len_k, offset", [(6, 6, 1), (5, 9, None), (9, 5, 5), (40, 33, 8)])
def test_blocked_attention_equals_sdpa(len_q: int, len_k: int, offset: int | None, monkeypatch):
    import msa.models.layers.blocked_attention as ba

    monkeypatch.setattr(ba, "BLOCK_ELEMENTS", 64)  # many small blocks, several per query range
    monkeypatch.setattr(ba, "MASKED_ROWS", 4)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 4, requires_grad=True) for n in (len_q, len_k, len_k))
    mask = None if offset is None else (torch.arange(len_k)[None] - torch.arange(len_q)[:, None]) < offset
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(sdpa_attention(q, k, v, 0.0, offset), want)  # the CUDA path's masking
    got = blocked_attention(q, k, v, 0.0, offset)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(want, (q, k, v), g), torch.autograd.grad(got, (q, k, v), g)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_blocked_attention_dropout_gradients_and_rate(monkeypatch):
    import msa.models.layers.blocked_attention as ba

    monkeypatch.setattr(ba, "BLOCK_ELEMENTS", 16)
    q, k, v = (torch.randn(1, 2, n, 3, dtype=torch.float64, requires_grad=True) for n in (5, 7, 7))

    def seeded(q, k, v):  # the same dropout mask on every call, so finite differences are valid
        torch.manual_seed(3)
        return blocked_attention(q, k, v, 0.4, 4)

    assert torch.autograd.gradcheck(seeded, (q, k, v), eps=1e-6, atol=1e-5)
    torch.manual_seed(0)
    out = blocked_attention(torch.zeros(4, 4, 64, 2), torch.zeros(4, 4, 512, 2), torch.ones(4, 4, 512, 1), 0.25)
    kept = out * 0.75  # uniform weights: out = (kept fraction) / (1 − p)
    assert abs(kept.mean().item() - 0.75) < 0.01


def test_blocked_attention_on_worker_threads_is_exact_and_reproducible():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, 4, requires_grad=True) for n in (12, 20, 20))
    g = torch.randn(3, 2, 12, 4)
    one = blocked_attention(q, k, v, 0.0, 9)
    grads_one = torch.autograd.grad(one, (q, k, v), g)
    torch.set_num_threads(2)  # the autouse fixture restores the thread count
    two = blocked_attention(q, k, v, 0.0, 9)
    torch.testing.assert_close(two, one, atol=1e-6, rtol=0)
    for a, b in zip(grads_one, torch.autograd.grad(two, (q, k, v), g)):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    runs = []
    for _ in range(2):  # dropout masks come from per-part generators seeded from the global one
        torch.manual_seed(5)
        out = blocked_attention(q, k, v, 0.5, 9)
        runs.append((out, *torch.autograd.grad(out, (q, k, v), g)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert torch.get_num_threads() == 2
