"""Mutual-information estimators used as training signals (MODELS.md §2.4, §2.5, §3.2, §3.3).

- Variational MI lower bounds on a critic score matrix ``S`` (B, B) whose diagonal holds the joint
  pairs: NWJ (MIMRL paper), InfoNCE (MIMRL code default), DV. Critics: ``separate`` (S = h(y) g(x)^T)
  and ``concat`` (S_ij = f([x_i; y_j])).
- Classifier-based conditional MI ``I(X;Y|Z)`` (CCMI/CMINE style) whose product-of-marginals rows
  come from k-nearest-neighbour sampling in a feature memory (``prod_knn_sample``).
- MMIM's CPC (fusion-level) and MMILB (Barber-Agakov bound with a Gaussian-mixture entropy).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BOUNDS = ("nwj", "infonce", "dv")
CRITICS = ("separate", "concat")
CMI_FORMS = ("code", "standard")
CMI_LAST = ("sigmoid", "hardtanh")


def mlp(sizes: list[int], zero_bias: bool = True) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last); biases start at zero if ``zero_bias``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        if zero_bias:
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------------
# critics and bounds


class SeparateCritic(nn.Module):
    """``S_ij = <h(y_i), g(x_j)>``: one embedding network per variable, B^2 scores for 2B passes."""

    def __init__(self, dim_x: int, dim_y: int, hidden: int = 256, embed: int = 128, layers: int = 2) -> None:
        super().__init__()
        sizes = [hidden] * (layers + 1)
        self.g = mlp([dim_x, *sizes, embed])
        self.h = mlp([dim_y, *sizes, embed])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.h(y) @ self.g(x).t()


class ConcatCritic(nn.Module):
    """``S_ij = f([x_i; y_j])`` over all B^2 pairs (only for small batches)."""

    def __init__(self, dim_x: int, dim_y: int, hidden: int = 256, embed: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.f = mlp([dim_x + dim_y, *([hidden] * (layers + 1)), 1])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        pairs = torch.cat([x.unsqueeze(1).expand(b, b, -1), y.unsqueeze(0).expand(b, b, -1)], dim=-1)
        return self.f(pairs).squeeze(-1)


def _logmeanexp_offdiag(scores: torch.Tensor) -> torch.Tensor:
    n = scores.size(0)
    if n < 2:
        raise ValueError("an MI bound needs a batch of at least 2 samples (off-diagonal pairs)")
    eye = torch.eye(n, dtype=torch.bool, device=scores.device)
    return torch.logsumexp(scores.masked_fill(eye, float("-inf")).flatten(), 0) - math.log(n * (n - 1))


def nwj_bound(scores: torch.Tensor) -> torch.Tensor:
    """NWJ (TUBA with log-baseline 1): ``1 + mean_i(S_ii - 1) - mean_{i!=j} exp(S_ij - 1)``."""
    shifted = scores - 1.0
    return 1.0 + shifted.diagonal().mean() - torch.exp(_logmeanexp_offdiag(shifted))


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE: ``log B + mean_i [S_ii - logsumexp_j S_ij]`` (row i: all x for a fixed y_i); <= log B."""
    return math.log(scores.size(0)) + (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()


def dv_bound(scores: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan: ``mean_i S_ii - log mean_{i!=j} exp(S_ij)``."""
    return scores.diagonal().mean() - _logmeanexp_offdiag(scores)


_BOUND_FNS = {"nwj": nwj_bound, "infonce": infonce_bound, "dv": dv_bound}


class MIEstimator(nn.Module):
    """A critic plus a bound; ``forward(x, y)`` returns the MI estimate (maximise it; loss is ``-mi``)."""

    def __init__(self, dim_x: int, dim_y: int, critic: str = "separate", bound: str = "infonce",
                 hidden: int = 256, embed: int = 128, layers: int = 2) -> None:
        super().__init__()
        if critic not in CRITICS or bound not in BOUNDS:
            raise ValueError(f"critic must be one of {CRITICS} and bound one of {BOUNDS}, got {critic!r}/{bound!r}")
        cls = SeparateCritic if critic == "separate" else ConcatCritic
        self.critic = cls(dim_x, dim_y, hidden, embed, layers)
        self.bound = bound

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _BOUND_FNS[self.bound](self.critic(x, y))


# ---------------------------------------------------------------------------------------------------
# conditional MI with kNN product samples


def tile_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Repeat the columns of a narrower block ``width // dim`` times (the label C -> (B, width))."""
    reps = width // x.size(1)
    return x.repeat(1, reps) if reps > 1 else x


def tiled_width(dim: int, width: int) -> int:
    return dim * max(1, width // dim)


def knn_product_indices(z_all: torch.Tensor, m: int, k: int,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``m`` distinct anchors from the memory; for each, the ``k`` nearest rows in z (Euclidean)
    among the rows that are not anchors. Returns (anchors (m,), neighbours (m, k)) memory indices."""
    n = z_all.size(0)
    if m < 1 or n - m < k:
        raise ValueError(f"kNN product sampling needs memory > m + k rows (memory {n}, m {m}, k {k})")
    perm = torch.randperm(n, generator=generator).to(z_all.device)
    anchors, pool = perm[:m], perm[m:].sort().values
    z = z_all.detach().float()
    nearest = torch.cdist(z[anchors], z[pool]).topk(k, dim=1, largest=False).indices
    return anchors, pool[nearest]


def prod_knn_sample(x_all: torch.Tensor, y_all: torch.Tensor, z_all: torch.Tensor, batch_size: int, k: int,
                    width: int | None = None, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples of ~p(x|z) p(y|z) p(z) from a memory: ``m = batch_size // k`` anchors i, each emitting
    ``(x[n_ij], y[i], z[i])`` for its k nearest neighbours n_ij in z. Conditions on the THIRD argument;
    the first is drawn from the neighbour. Outputs are detached (no gradient to the encoders) and each
    block is tiled to ``width`` (default: the widest block)."""
    anchors, neigh = knn_product_indices(z_all, max(1, batch_size // k), k, generator)
    rep = anchors.repeat_interleave(k)
    blocks = (x_all[neigh.flatten()], y_all[rep], z_all[rep])
    width = width or max(b.size(1) for b in blocks)
    return tuple(tile_to(b.detach(), width) for b in blocks)  # type: ignore[return-value]


def cmi_from_gamma(g_joint: torch.Tensor, g_prod: torch.Tensor, form: str = "code") -> torch.Tensor:
    """CMI from classifier outputs gamma = P(joint | row).

    ``code`` (MIMRL as implemented, AQ): ``1 + (1/n) sum_J log r - (1/n) sum_P log r`` with
    ``r = g/(1-g+1e-6)`` and n = all rows (joint + product). ``standard`` (classifier NWJ):
    ``1 + E_J[log r] - E_P[r]``, which is ~0 when the classifier cannot tell the two apart.
    """
    if form == "code":
        n = g_joint.numel() + g_prod.numel()
        lj = torch.log(g_joint / (1 - g_joint + 1e-6)).sum()
        lp = torch.log(g_prod / (1 - g_prod + 1e-6)).sum()
        return 1.0 + lj / n - lp / n
    if form == "standard":
        return 1.0 + torch.log(g_joint / (1 - g_joint)).mean() - (g_prod / (1 - g_prod)).mean()
    raise ValueError(f"CMI form must be one of {CMI_FORMS}, got {form!r}")


class CMIEstimator(nn.Module):
    """Classifier-based ``I(X;Y|Z)``: a classifier separates joint rows [x,y,z] of the current batch from
    kNN product rows drawn from a memory; ``forward`` returns (cmi estimate, BCE training loss)."""

    def __init__(self, dims: tuple[int, int, int], width: int = 128, hidden: int = 256, k: int = 2,
                 last: str = "sigmoid", form: str = "code") -> None:
        super().__init__()
        if last not in CMI_LAST or form not in CMI_FORMS:
            raise ValueError(f"last must be one of {CMI_LAST} and form one of {CMI_FORMS}")
        self.width, self.k, self.last, self.form = width, k, last, form
        self.classifier = mlp([sum(tiled_width(d, width) for d in dims), hidden, hidden, hidden, 2], zero_bias=False)

    def gamma(self, rows: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(rows).clamp(-10, 10)
        return torch.sigmoid(logits) if self.last == "sigmoid" else F.hardtanh(logits, 1e-4, 1 - 1e-4)

    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([tile_to(t, self.width) for t in (x, y, z)], dim=1)
        prod = torch.cat(prod_knn_sample(*memory, x.size(0), self.k, self.width, generator), dim=1)
        n = min(joint.size(0), prod.size(0))
        rows = torch.cat([joint[:n], prod[:n].to(joint.dtype)], dim=0)
        target = torch.zeros(2 * n, 2, device=rows.device)
        target[:n, 0] = 1
        target[n:, 1] = 1
        g = self.gamma(rows).float()
        with torch.autocast(device_type=g.device.type, enabled=False):  # BCE is unsafe under autocast
            bce = F.binary_cross_entropy(g, target)
        return cmi_from_gamma(g[:n, 0], g[n:, 0], self.form), bce


# ---------------------------------------------------------------------------------------------------
# MMIM: CPC and MMILB


def cpc_nce(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``-mean_i [<x_i, x̂_i> - logsumexp_j <x_i, x̂_j>]`` on L2-normalised rows (>= 0, no temperature)."""
    x, x_hat = F.normalize(x, dim=-1), F.normalize(x_hat, dim=-1)
    scores = x @ x_hat.t()
    return -(scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()


class CPC(nn.Module):
    """Fusion-level MI term: predict a modality ``x`` (dim_x) from the fused vector (dim_f)."""

    def __init__(self, dim_x: int, dim_f: int, layers: int = 1) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for _ in range(layers - 1):
            mods += [nn.Linear(dim_f, dim_f), nn.Tanh()]
        self.net = nn.Sequential(*mods, nn.Linear(dim_f, dim_x))

    def forward(self, x: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        return cpc_nce(x, self.net(fused))


def gaussian_lld(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_k -(mu-y)^2 / (2 exp(logvar))`` (MMIM omits the -logvar/2 normaliser): <= 0."""
    return (-(mu - y) ** 2 / (2 * torch.exp(logvar))).sum(-1).mean()


def gaussian_entropy(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``1/4 (logdet Sigma_+ + logdet Sigma_-)`` with biased covariances of the two groups' rows."""
    def logdet_cov(z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        c = z - z.mean(0, keepdim=True)
        return torch.logdet(c.t() @ c / z.size(0))

    return 0.25 * (logdet_cov(pos) + logdet_cov(neg))


class MMILB(nn.Module):
    """Input-level MI lower bound for ``x -> y``: a Gaussian q(y|x) (``lld``) and the projection used
    for the Gaussian-mixture entropy term (``project``)."""

    def __init__(self, dim_x: int, dim_y: int) -> None:
        super().__init__()
        self.mlp_mu = nn.Sequential(nn.Linear(dim_x, dim_y), nn.ReLU(), nn.Linear(dim_y, dim_y))
        self.mlp_logvar = nn.Sequential(nn.Linear(dim_x, dim_y), nn.ReLU(), nn.Linear(dim_y, dim_y))
        self.entropy_prj = nn.Sequential(nn.Linear(dim_y, max(1, dim_y // 4)), nn.Tanh())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gaussian_lld(self.mlp_mu(x), self.mlp_logvar(x), y)

    def project(self, y: torch.Tensor) -> torch.Tensor:
        return self.entropy_prj(y)
