"""CubeMLP fusion encoder (MODELS.md §2.2, §2.8 property 9)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msa.models.layers.cubemlp import CubeBlock, MLPEncoder, parse_flags, parse_sizes

torch.set_num_threads(1)


def test_parse_sizes_and_flags():
    assert parse_sizes("50-3-128=10-3-128") == [(50, 3, 128), (10, 3, 128)]
    assert parse_flags("1-0") == [True, False]
    for bad in ("50-3", "a-b-c", "5-0-3"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_encoder_output_shape():
    enc = MLPEncoder((8, 3, 16), [(6, 4, 20), (3, 5, 12)], [(4, 3, 16), (2, 2, 8)], bias=True)
    assert enc(torch.randn(5, 8, 3, 16)).shape == (5, 2, 2, 8)
    assert enc.d_out == (2, 2, 8)


def test_one_modality_change_reaches_every_output_element():
    torch.manual_seed(0)
    enc = MLPEncoder((6, 3, 8), [(5, 4, 10)], [(4, 3, 8)], bias=True).eval()
    x = torch.randn(2, 6, 3, 8)
    x2 = x.clone()
    x2[0, 2, 1] += 1.0  # one time step of one modality (audio) in sample 0
    y, y2 = enc(x), enc(x2)
    assert (y2[0] - y[0]).abs().min() > 1e-6  # every time step, modality and channel moved
    assert torch.equal(y[1], y2[1])  # other samples untouched


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_each_axis_mlp_mixes_along_its_axis(axis):
    """With LayerNorms removed and the other two MLPs zeroed (identity residuals), one element's change
    spreads along exactly the axis whose MLP is active: L (1), K (2) or D (3)."""
    torch.manual_seed(0)
    block = CubeBlock((4, 3, 5), (4, 3, 5), (4, 3, 5), bias=True, project=False).eval()
    steps = {1: block.seq, 2: block.mod, 3: block.chan}
    for i, step in steps.items():
        step.norm = torch.nn.Identity()
        if i != axis:
            for p in step.mlp.parameters():
                torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 3, 5)
    x2 = x.clone()
    x2[0, 1, 1, 1] += 1.0
    moved = ((block(x2) - block(x)).abs() > 1e-6)[0]
    line = [1, 1, 1]
    line[axis - 1] = slice(None)
    assert moved[tuple(line)].all()  # spread along the active axis
    assert moved.sum() == moved[tuple(line)].numel()  # and nowhere else


def test_zero_mlps_give_stacked_layernorms():
    torch.manual_seed(0)
    block = CubeBlock((6, 3, 8), (5, 4, 7), (6, 3, 8), bias=True, project=False).eval()
    for step in (block.seq, block.mod, block.chan):
        for p in step.mlp.parameters():
            torch.nn.init.zeros_(p)
    x = torch.randn(2, 6, 3, 8) * 3 + 1
    ln_l = F.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    ln_k = F.layer_norm(ln_l.permute(0, 1, 3, 2), (3,), eps=1e-6).permute(0, 1, 3, 2)
    expected = F.layer_norm(ln_k, (8,), eps=1e-6)
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_sequence_layernorm_normalises_across_time():
    torch.manual_seed(0)
    block = CubeBlock((7, 3, 4), (5, 3, 4), (6, 3, 4), bias=True).eval()
    z = (torch.randn(2, 7, 3, 4) * 5 + 2).permute(0, 2, 3, 1)  # [B, K, D, L]
    out = block.seq(z)  # step 1 output, L' last
    assert out.shape[-1] == 6
    assert torch.allclose(out.mean(-1), torch.zeros(2, 3, 4), atol=1e-5)
    assert torch.allclose(out.var(-1, unbiased=False), torch.ones(2, 3, 4), atol=1e-3)


def test_pre_ln_with_zero_mlps_is_identity():
    block = CubeBlock((4, 3, 5), (4, 3, 5), (4, 3, 5), bias=True, project=False, ln_first=True).eval()
    for step in (block.seq, block.mod, block.chan):
        for p in step.mlp.parameters():
            torch.nn.init.zeros_(p)
    x = torch.randn(2, 4, 3, 5)
    assert torch.allclose(block(x), x)


def test_resizing_without_projection_is_rejected():
    with pytest.raises(ValueError, match="in == out"):
        CubeBlock((6, 3, 8), (5, 3, 8), (4, 3, 8), project=False)
