"""SupCR (both denominators) and HSCL's similarity loss: MODELS.md §4.4 and §4.6 items 1 to 4."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from msa.models.layers.supcr import similarity_loss, supcr_loss, supcr_terms
from msa.core.errors import UsageError

BOTH = ("positive", "anchor")


def _naive(view0: torch.Tensor, view1: torch.Tensor, y: torch.Tensor, tau: float, denominator: str) -> float:
    """Triple loop over (anchor a, positive p, negative k), straight from the formula, in float64."""
    z = torch.cat([F.normalize(view0.double(), dim=-1), F.normalize(view1.double(), dim=-1)])
    lab = torch.cat([y, y]).double().tolist()
    n2 = len(lab)
    total = 0.0
    for a in range(n2):
        for p in range(n2):
            if p == a:
                continue
            ref = p if denominator == "positive" else a
            denom = sum(math.exp(float(z[ref] @ z[k]) / tau) for k in range(n2)
                        if k != a and abs(lab[a] - lab[k]) >= abs(lab[a] - lab[p]))
            total += float(z[a] @ z[p]) / tau - math.log(denom)
    return -total / (n2 * (n2 - 1))


@pytest.mark.parametrize("denominator", BOTH)
def test_identical_views_give_the_test_vector(denominator: str) -> None:
    v = torch.ones(2, 4)
    loss = supcr_loss(v, v.clone(), torch.tensor([0.0, 1.0]), 0.5, denominator)
    assert float(loss) == pytest.approx((2 * math.log(2) + math.log(3)) / 3, abs=1e-6)
    assert float(loss) == pytest.approx(0.828302, abs=1e-6)


@pytest.mark.parametrize("denominator", BOTH)
def test_identical_views_give_mean_log_negative_set_size(denominator: str) -> None:
    y = torch.tensor([0.0, 0.5, 0.5, -1.5, 2.5])  # binary fractions: exact ties (|0.5+1.5| = |0.5-2.5|)
    v = torch.randn(1, 6).expand(5, 6)
    lab = torch.cat([y, y]).tolist()
    n2 = len(lab)
    expected = sum(math.log(sum(1 for k in range(n2) if k != a and abs(lab[a] - lab[k]) >= abs(lab[a] - lab[p])))
                   for a in range(n2) for p in range(n2) if p != a) / (n2 * (n2 - 1))
    assert float(supcr_loss(v, v, y, 0.5, denominator)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("denominator", BOTH)
def test_equals_naive_triple_loop(denominator: str) -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0.25, -1.0, 0.25, 1.5, 0.0, -1.0])  # ties exercise the >= in the negative set
    v0, v1 = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g)
    for tau in (0.5, 0.07):
        assert float(supcr_loss(v0, v1, y, tau, denominator)) == pytest.approx(_naive(v0, v1, y, tau, denominator), rel=1e-5)


def test_the_two_denominators_differ() -> None:
    g = torch.Generator().manual_seed(4)
    v0, v1, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.tensor([0.0, 1, 2, 3, 4])
    assert abs(float(supcr_loss(v0, v1, y, 0.5, "positive") - supcr_loss(v0, v1, y, 0.5, "anchor"))) > 1e-3


@pytest.mark.parametrize("denominator", BOTH)
def test_negatives_are_only_samples_at_least_as_far_in_label(denominator: str) -> None:
    """l(a, p) has a gradient w.r.t. z_k exactly when |y_a - y_k| >= |y_a - y_p| (k != a, p)."""
    n = 5
    y = torch.tensor([0.0, 0.5, 1.0, 2.0, -3.0])
    lab = torch.cat([y, y])
    g = torch.Generator().manual_seed(5)
    base0, base1 = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    a, p = 0, 2  # anchor y=0, positive y=1: samples with |y| >= 1 are negatives, y=0.5 (rows 1, 6) is not
    v0, v1 = base0.clone().requires_grad_(), base1.clone().requires_grad_()
    supcr_terms(v0, v1, y, 0.5, denominator)[a, p].backward()
    grads = torch.cat([v0.grad, v1.grad]).norm(dim=-1)
    for k in range(2 * n):
        if k in (a, p):
            continue
        is_negative = abs(float(lab[a] - lab[k])) >= abs(float(lab[a] - lab[p]))
        assert (float(grads[k]) > 1e-8) == is_negative, f"row {k} (label {float(lab[k])})"


def _toward_prototypes(g: torch.Generator, lam: float = 0.5) -> tuple[float, float]:
    n, d = 8, 8
    y = torch.randint(0, 3, (n,), generator=g).float()
    v0, v1 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    proto = F.normalize(torch.randn(3, d, generator=g), dim=-1)[y.long()]
    w0 = (1 - lam) * F.normalize(v0, dim=-1) + lam * proto
    w1 = (1 - lam) * F.normalize(v1, dim=-1) + lam * proto
    return float(supcr_loss(v0, v1, y, 0.5, "anchor")), float(supcr_loss(w0, w1, y, 0.5, "anchor"))


def test_anchor_variant_decreases_when_same_label_views_move_closer_random_trials() -> None:
    g = torch.Generator().manual_seed(0)
    trials = [_toward_prototypes(g) for _ in range(200)]
    assert sum(after < before for before, after in trials) >= 180


def test_anchor_variant_decreases_in_a_constructed_case() -> None:
    """Two label groups on opposite sides of the circle; each view moves from +-0.6/1.0 rad to +-0.1/0.2 rad."""
    def on_circle(offsets: list[float]) -> torch.Tensor:
        return torch.tensor([[math.cos(t), math.sin(t)] for t in offsets])

    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    spread = supcr_loss(on_circle([0.6, -0.6, math.pi + 0.6, math.pi - 0.6]),
                        on_circle([1.0, -1.0, math.pi + 1.0, math.pi - 1.0]), y, 0.5, "anchor")
    tight = supcr_loss(on_circle([0.1, -0.1, math.pi + 0.1, math.pi - 0.1]),
                       on_circle([0.2, -0.2, math.pi + 0.2, math.pi - 0.2]), y, 0.5, "anchor")
    assert float(tight) < float(spread) - 0.3


@pytest.mark.parametrize("denominator", BOTH)
def test_invariant_to_positive_rescaling(denominator: str) -> None:
    g = torch.Generator().manual_seed(6)
    v0, v1 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    y = torch.tensor([1.0, 1, 1, 1, 1, 1])  # equal labels: every other row is a negative
    s0, s1 = torch.rand(6, 1, generator=g) * 10 + 0.1, torch.rand(6, 1, generator=g) * 10 + 0.1
    assert float(supcr_loss(v0 * s0, v1 * s1, y, 0.5, denominator)) == pytest.approx(float(supcr_loss(v0, v1, y, 0.5, denominator)), rel=1e-5)
    same = torch.ones(6, 4)
    assert float(supcr_loss(same, same, y, 0.5, denominator)) == pytest.approx(math.log(11), rel=1e-6)


def test_supcr_rejects_bad_input() -> None:
    with pytest.raises(UsageError, match="denominator"):
        supcr_loss(torch.ones(2, 3), torch.ones(2, 3), torch.zeros(2), denominator="key")
    with pytest.raises(UsageError, match="equal shape"):
        supcr_loss(torch.ones(2, 3), torch.ones(3, 3), torch.zeros(2))
    with pytest.raises(UsageError, match="one label per sample"):
        supcr_loss(torch.ones(2, 3), torch.ones(2, 3), torch.zeros(3))


def test_similarity_loss_is_unsquared_l2_and_zero_only_at_coincidence() -> None:
    g = torch.Generator().manual_seed(7)
    a, d = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    assert float(similarity_loss(a, a.clone())) == 0.0
    assert float(similarity_loss(a, a + 1e-3 * d)) > 0.0
    base = float(similarity_loss(a, a + d))
    assert base == pytest.approx(float(d.norm(dim=-1).mean()), rel=1e-6)
    assert float(similarity_loss(a, a + 3 * d)) == pytest.approx(3 * base, rel=1e-5)  # linear in the distance
    assert float(similarity_loss(a, a + 3 * d, squared=True)) == pytest.approx(9 * float(similarity_loss(a, a + d, squared=True)), rel=1e-5)
    x = a.clone().requires_grad_()
    similarity_loss(x, a).backward()
    assert torch.isfinite(x.grad).all()  # coincident pairs give a zero (not NaN) gradient
