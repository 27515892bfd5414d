"""Mechanism tests for the MI / CMI estimators (MODELS.md §2.4, §2.5, §2.8)."""
from __future__ import annotations

import math

import pytest
import torch

from msa.models.layers.mi import (CMIEstimator, ConcatCritic, MIEstimator, cmi_from_gamma, dv_bound, infonce_bound,
                                  knn_product_indices, nwj_bound, prod_knn_sample, tile_to)

torch.set_num_threads(1)


def gaussian_pair(n: int, rho: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 1, generator=g)
    return x, rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, 1, generator=g)


def train_mi(rho: float, steps: int = 300) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    est = MIEstimator(1, 1, critic="separate", bound="nwj", hidden=32, embed=16, layers=1)
    opt = torch.optim.Adam(est.parameters(), lr=2e-3)
    for _ in range(steps):
        loss = -est(*gaussian_pair(128, rho, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return sum(float(est(*gaussian_pair(1024, rho, g))) for _ in range(4)) / 4


def test_nwj_on_gaussians_beats_independent_and_approaches_analytic_mi():
    rho = 0.8
    analytic = -0.5 * math.log(1 - rho ** 2)  # 0.511 nats
    dependent, independent = train_mi(rho), train_mi(0.0)
    assert abs(independent) < 0.05
    assert dependent > independent + 0.3
    assert analytic - 0.12 < dependent < analytic + 0.05  # a lower bound, close after training


@pytest.mark.parametrize("c", [-1.0, 0.0, 0.5, 1.0, 2.5])
def test_constant_critic_values(c):
    s = torch.full((6, 6), c)
    assert float(nwj_bound(s)) == pytest.approx(c - math.exp(c - 1), abs=1e-6)
    assert float(nwj_bound(s)) <= 1e-7
    assert float(infonce_bound(s)) == pytest.approx(0.0, abs=1e-6)
    assert float(dv_bound(s)) == pytest.approx(0.0, abs=1e-6)
    assert float(nwj_bound(torch.full((6, 6), 1.0))) == pytest.approx(0.0, abs=1e-7)


def test_infonce_never_exceeds_log_b_and_bounds_rise_with_diagonal():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 8, generator=g)
    boosted = s + 5 * torch.eye(8)
    for bound in (nwj_bound, infonce_bound, dv_bound):
        assert float(bound(boosted)) > float(bound(s))
    assert float(infonce_bound(s + 100 * torch.eye(8))) <= math.log(8) + 1e-6
    assert float(infonce_bound(s + 100 * torch.eye(8))) == pytest.approx(math.log(8), abs=1e-4)


def test_concat_critic_scores_every_pair():
    critic = ConcatCritic(3, 2, hidden=8, embed=4, layers=1)
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    s = critic(x, y)
    assert s.shape == (5, 5)
    assert torch.allclose(s[1, 3], critic.f(torch.cat([x[1], y[3]])).squeeze())


def test_cmi_code_form_is_one_at_half_and_moves_with_logits():
    half = torch.full((10,), 0.5)
    assert float(cmi_from_gamma(half, half, "code")) == pytest.approx(1.0, abs=1e-5)
    assert float(cmi_from_gamma(half, half, "standard")) == pytest.approx(0.0, abs=1e-6)
    for form in ("code", "standard"):
        base = float(cmi_from_gamma(half, half, form))
        assert float(cmi_from_gamma(torch.full((10,), 0.8), half, form)) > base  # joint logits rise
        assert float(cmi_from_gamma(half, torch.full((10,), 0.2), form)) > base  # product logits fall


def conditional_data(n: int, dependent: bool, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """z ~ N(0,1); x = z + noise; y depends on z only, or also on x (then I(X;Y|Z) ~ 0.99 nats)."""
    z = torch.randn(n, 1, generator=g)
    x = z + 0.5 * torch.randn(n, 1, generator=g)
    y = (x if dependent else z + 0.5 * torch.randn(n, 1, generator=g)) + 0.2 * torch.randn(n, 1, generator=g)
    return x, y, z


def train_cmi(dependent: bool, steps: int = 250) -> dict[str, float]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    memory = conditional_data(2000, dependent, g)
    est = CMIEstimator((1, 1, 1), width=1, hidden=32, k=2)
    opt = torch.optim.Adam(est.parameters(), lr=2e-3)
    for _ in range(steps):
        _, bce = est(*conditional_data(128, dependent, g), memory, generator=g)
        opt.zero_grad()
        bce.backward()
        opt.step()
    result = {}
    with torch.no_grad():
        for form in ("code", "standard"):
            est.form = form
            vals = [float(est(*conditional_data(512, dependent, g), memory, generator=g)[0]) for _ in range(4)]
            result[form] = sum(vals) / len(vals)
    return result


def test_cmi_larger_when_dependent_given_z_and_standard_form_near_zero_when_independent():
    dep, ind = train_cmi(True), train_cmi(False)
    assert dep["code"] > ind["code"] + 0.8
    assert dep["standard"] > ind["standard"] + 0.5
    assert abs(ind["standard"]) < 0.1
    assert abs(ind["code"] - 1.0) < 0.1  # the code form's "nothing learned" value is 1


def test_knn_indices_are_nearest_non_anchor_rows():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 2, generator=g)
    anchors, neigh = knn_product_indices(z, 6, 3, generator=g)
    assert anchors.shape == (6,) and neigh.shape == (6, 3)
    assert len(set(anchors.tolist())) == 6
    anchor_set = set(anchors.tolist())
    pool = torch.tensor([i for i in range(40) if i not in anchor_set])
    for a, row in zip(anchors.tolist(), neigh):
        assert not anchor_set & set(row.tolist())  # anchors (incl. itself) are excluded from the pool
        d_pool = (z[pool] - z[a]).norm(dim=1).sort().values
        d_chosen = (z[row] - z[a]).norm(dim=1).sort().values
        assert torch.allclose(d_chosen, d_pool[:3])


def test_prod_knn_sample_shapes_copies_and_no_gradient():
    g = torch.Generator().manual_seed(4)
    x_all = torch.randn(30, 4, requires_grad=True)
    y_all = torch.randn(30, 1, requires_grad=True)  # the 1-D label block gets tiled
    z_all = torch.randn(30, 4, requires_grad=True)
    px, py, pz = prod_knn_sample(x_all, y_all, z_all, batch_size=9, k=2, generator=g)
    m = 9 // 2
    assert px.shape == (m * 2, 4) and py.shape == (m * 2, 4) and pz.shape == (m * 2, 4)
    assert not (px.requires_grad or py.requires_grad or pz.requires_grad)
    assert torch.equal(py, py[:, :1].expand(-1, 4))  # tiled label block is constant across columns
    for r in range(m * 2):
        zi = (z_all.detach() == pz[r]).all(1).nonzero().flatten()
        assert len(zi) == 1 and torch.equal(py[r, 0], y_all.detach()[zi[0], 0])  # y, z from the same anchor
        assert (x_all.detach() == px[r]).all(1).any()  # x is a memory row
        assert pz[r].tolist() == pz[r - r % 2].tolist()  # k consecutive rows share their anchor


def test_no_gradient_from_product_rows():
    g = torch.Generator().manual_seed(5)
    est = CMIEstimator((3, 3, 1), width=3, hidden=8, k=2)
    memory = tuple(torch.randn(20, d, requires_grad=True) for d in (3, 3, 1))
    x = torch.randn(5, 3, requires_grad=True)
    cmi, _ = est(x, torch.randn(5, 3), torch.randn(5, 1), memory, generator=g)
    cmi.backward()
    assert all(m.grad is None for m in memory)
    assert x.grad[:4].abs().sum() > 0  # m*k = 4 joint rows are used ...
    assert torch.equal(x.grad[4], torch.zeros(3))  # ... and the fifth is truncated away


def test_tile_to_repeats_narrow_blocks():
    c = torch.tensor([[0.5], [-1.0]])
    t = tile_to(c, 8)
    assert t.shape == (2, 8) and torch.equal(t, c.expand(-1, 8))
    wide = torch.randn(2, 8)
    assert tile_to(wide, 8) is wide
