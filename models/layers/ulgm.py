"""Self-MM's unimodal label generation module (ULGM), MODELS.md 1.4.

The mechanism is written as pure functions (``relative_distance``, ``generate_labels``,
``momentum_update``, ``class_centres``) so each formula can be tested on its own; ``ULGM`` holds the
non-parametric training state (feature banks, label banks, centres) as non-persistent buffers: they
follow the model between devices, never receive gradients and are not saved in checkpoints.

Labels are handled around a ``centre`` c: a label counts as positive when ``y - c > 0`` and the
ratio form of the generated label is computed on ``y - c``. With c = 0 (MOSI, MOSEI, SIMS) this is
exactly MMSA; for a one-sided range such as PHQ-8 [0, 24] a centre inside the range gives both
class centres members (see docs/models_batch1.md).
"""
from __future__ import annotations

import torch
from torch import nn

BRANCHES = ("f", "t", "a", "v")
UNIMODAL = ("t", "a", "v")


def relative_distance(f: torch.Tensor, c_pos: torch.Tensor, c_neg: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """δ = (||f − C⁻|| − ||f − C⁺||) / (||f − C⁺|| + eps), row-wise plain L2 norms (not squared)."""
    d_p = torch.linalg.vector_norm(f - c_pos, dim=-1)
    d_n = torch.linalg.vector_norm(f - c_neg, dim=-1)
    return (d_n - d_p) / (d_p + eps)


def generate_labels(y_m: torch.Tensor, delta_f: torch.Tensor, delta_s: torch.Tensor,
                    low: float, high: float, eps: float = 1e-8) -> torch.Tensor:
    """ỹ_s = ½·(δ_s/δ_f)·y_m + ½·(y_m + δ_s − δ_f), clamped to [low, high] (all in centred coordinates)."""
    ratio = delta_s / (delta_f + eps)
    y = 0.5 * ratio * y_m + 0.5 * (y_m + delta_s - delta_f)
    return y.clamp(low, high)


def momentum_update(old: torch.Tensor, new: torch.Tensor, epoch: int) -> torch.Tensor:
    """(n−1)/(n+1)·old + 2/(n+1)·new for the 1-based epoch n."""
    return (epoch - 1) / (epoch + 1) * old + 2.0 / (epoch + 1) * new


def class_centres(bank: torch.Tensor, labels: torch.Tensor,
                  exclude_zero: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the bank rows with positive (> 0, or ≥ 0 without ``exclude_zero``) and negative labels.

    A side with no member gives a zero centre (MMSA would produce NaN there).
    """
    pos = (labels > 0) if exclude_zero else (labels >= 0)
    neg = labels < 0
    masks = torch.stack([pos, neg]).to(bank.dtype)  # (2, N)
    sums = masks @ bank
    counts = masks.sum(dim=1, keepdim=True).clamp_min(1.0)
    c = sums / counts
    return c[0], c[1]


class ULGM(nn.Module):
    """Banks and centres for the four branches f, t, a, v; see MODELS.md 1.4 for the schedule."""

    def __init__(self, feature_dims: dict[str, int], low: float, high: float, centre: float = 0.0,
                 exclude_zero: bool = True) -> None:
        super().__init__()
        self.feature_dims = dict(feature_dims)
        self.low, self.high, self.centre = float(low), float(high), float(centre)
        self.exclude_zero = exclude_zero
        for b in BRANCHES:
            d = self.feature_dims[b]
            self.register_buffer(f"feat_{b}", torch.zeros(0, d), persistent=False)
            self.register_buffer(f"label_{b}", torch.zeros(0), persistent=False)
            self.register_buffer(f"pos_{b}", torch.zeros(d), persistent=False)
            self.register_buffer(f"neg_{b}", torch.zeros(d), persistent=False)
        self.register_buffer("filled", torch.zeros(0, dtype=torch.bool), persistent=False)

    # state ------------------------------------------------------------------------------------
    def _get(self, kind: str, b: str) -> torch.Tensor:
        return getattr(self, f"{kind}_{b}")

    def reset(self, n: int) -> None:
        """Allocate empty banks for ``n`` training samples (zero features and centres, no labels)."""
        dev = self.filled.device
        for b in BRANCHES:
            d = self.feature_dims[b]
            setattr(self, f"feat_{b}", torch.zeros(n, d, device=dev))
            setattr(self, f"label_{b}", torch.zeros(n, device=dev))
            setattr(self, f"pos_{b}", torch.zeros(d, device=dev))
            setattr(self, f"neg_{b}", torch.zeros(d, device=dev))
        self.filled = torch.zeros(n, dtype=torch.bool, device=dev)

    @property
    def size(self) -> int:
        return int(self.filled.shape[0])

    @torch.no_grad()
    def fill(self, index: torch.Tensor, labels: torch.Tensor) -> None:
        """Initialise every label bank with the multimodal labels: Y_f = Y_t = Y_a = Y_v = y_m."""
        index = index.to(self.filled.device).long()
        if index.numel() and int(index.max()) >= self.size:
            self._grow(int(index.max()) + 1)
        y = labels.detach().to(self.filled.device, torch.float32).reshape(-1)
        for b in BRANCHES:
            self._get("label", b)[index] = y
        self.filled[index] = True

    @torch.no_grad()
    def ensure(self, index: torch.Tensor, labels: torch.Tensor) -> None:
        """Fill the samples of this batch that were never filled (a trainer that skipped ``on_train_start``)."""
        index = index.to(self.filled.device).long()
        if index.numel() and int(index.max()) >= self.size:
            self._grow(int(index.max()) + 1)
        new = ~self.filled[index]
        if bool(new.any()):
            self.fill(index[new], labels.reshape(-1)[new.to(labels.device)])

    def _grow(self, n: int) -> None:
        old = self.size
        saved = {(k, b): self._get(k, b) for k in ("feat", "label") for b in BRANCHES}
        filled = self.filled
        centres = {(k, b): self._get(k, b) for k in ("pos", "neg") for b in BRANCHES}
        self.reset(n)
        for (k, b), t in saved.items():
            self._get(k, b)[:old] = t
        for (k, b), t in centres.items():
            setattr(self, f"{k}_{b}", t)
        self.filled[:old] = filled

    # training-time reads ----------------------------------------------------------------------
    def targets(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The current label of each branch for these samples (Y_f is the dataset label)."""
        index = index.to(self.filled.device).long()
        return {b: self._get("label", b)[index] for b in BRANCHES}

    def weights(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """w_s = tanh(|Y_s − Y_f|) per sample for s in t, a, v; constants (no gradient)."""
        y = self.targets(index)
        return {s: torch.tanh((y[s] - y["f"]).abs()) for s in UNIMODAL}

    # the per-batch update (steps 5 to 7) ---------------------------------------------------------
    @torch.no_grad()
    def step(self, features: dict[str, torch.Tensor], index: torch.Tensor, epoch: int) -> None:
        """After backward: update u-labels (epoch > 1, current centres), write features, recompute centres."""
        index = index.to(self.filled.device).long()
        f = {b: features[b].detach().to(self.filled.device, torch.float32) for b in BRANCHES}
        if epoch > 1:
            y_m = self.label_f[index] - self.centre
            delta_f = relative_distance(f["f"], self.pos_f, self.neg_f)
            lo, hi = self.low - self.centre, self.high - self.centre
            for s in UNIMODAL:
                delta_s = relative_distance(f[s], self._get("pos", s), self._get("neg", s))
                new = generate_labels(y_m, delta_f, delta_s, lo, hi) + self.centre
                bank = self._get("label", s)
                bank[index] = momentum_update(bank[index], new, epoch)
        for b in BRANCHES:
            self._get("feat", b)[index] = f[b]
        self.update_centres()

    @torch.no_grad()
    def update_centres(self) -> None:
        for b in BRANCHES:
            pos, neg = class_centres(self._get("feat", b), self._get("label", b) - self.centre, self.exclude_zero)
            self._get("pos", b).copy_(pos)
            self._get("neg", b).copy_(neg)
