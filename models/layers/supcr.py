"""Supervised contrastive regression (SupCR) and HSCL's similarity loss (MODELS.md §4.4).

Two views per sample (e.g. text and audio projections) give 2N rows. For an anchor ``a`` and any other
row ``p`` (every other row is a positive), the negatives are the rows at least as far from ``a`` in
label as ``p`` is: ``S(a,p) = {k != a : |y_a - y_k| >= |y_a - y_p|}`` (``p`` itself included).

``denominator="positive"`` is HSCL's reference code (the sum runs over ``exp(s_pk)``);
``denominator="anchor"`` is standard SupCR / the paper (``exp(s_ak)``). A log is taken, as in the code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from msa.core.errors import UsageError

DENOMINATORS = ("positive", "anchor")


def _stack_views(view0: torch.Tensor, view1: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if view0.shape != view1.shape or view0.dim() != 2:
        raise UsageError(f"SupCR needs two (N, d) views of equal shape, got {tuple(view0.shape)} and {tuple(view1.shape)}")
    if labels.shape != (view0.shape[0],):
        raise UsageError(f"SupCR needs one label per sample: labels {tuple(labels.shape)} for N={view0.shape[0]}")
    z = torch.cat([F.normalize(view0, dim=-1), F.normalize(view1, dim=-1)], dim=0)  # all view-0 rows, then view-1
    y = torch.cat([labels, labels]).to(z.dtype)
    return z, y


def supcr_terms(view0: torch.Tensor, view1: torch.Tensor, labels: torch.Tensor, tau: float = 0.5,
                denominator: str = "positive") -> torch.Tensor:
    """The (2N, 2N) matrix of log-ratios ``l(a, p)``; the diagonal (p = a) is zero and unused."""
    if denominator not in DENOMINATORS:
        raise UsageError(f"SupCR denominator must be one of {DENOMINATORS}, got {denominator!r}")
    z, y = _stack_views(view0, view1, labels)
    n2 = z.shape[0]
    sim = z @ z.t() / tau  # s_rq, no max-subtraction needed: logsumexp is exact and stable
    dist = (y[:, None] - y[None, :]).abs()  # |y_a - y_k|
    eye = torch.eye(n2, dtype=torch.bool, device=z.device)
    # member[a, p, k] = k != a and |y_a - y_k| >= |y_a - y_p|
    member = (dist[:, None, :] >= dist[:, :, None]) & ~eye[:, None, :]
    if denominator == "anchor":
        scores = sim[:, None, :].expand(n2, n2, n2)  # exp(s_ak)
    else:
        scores = sim[None, :, :].expand(n2, n2, n2)  # exp(s_pk)
    log_denominator = torch.logsumexp(scores.masked_fill(~member, float("-inf")), dim=-1)
    terms = sim - log_denominator
    return terms.masked_fill(eye, 0.0)


def supcr_loss(view0: torch.Tensor, view1: torch.Tensor, labels: torch.Tensor, tau: float = 0.5,
               denominator: str = "positive") -> torch.Tensor:
    """``L = -(1/2N) sum_a (1/(2N-1)) sum_{p != a} l(a, p)`` (a scalar)."""
    terms = supcr_terms(view0, view1, labels, tau, denominator)
    n2 = terms.shape[0]
    if n2 < 2:
        raise UsageError("SupCR needs at least one sample (two views)")
    return -terms.sum() / (n2 * (n2 - 1))


def similarity_loss(view0: torch.Tensor, view1: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """``mean_i ||view0_i - view1_i||_2`` on the un-normalised projections (reference: unsquared).

    ``squared=True`` is the paper's ``||.||_2^2`` reading.
    """
    diff = view0 - view1
    if squared:
        return diff.pow(2).sum(dim=-1).mean()
    return torch.linalg.vector_norm(diff, dim=-1).mean()  # its gradient at coincidence is 0, not NaN
