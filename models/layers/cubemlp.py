"""CubeMLP fusion encoder (MODELS.md §2.2): MLP mixing along the sequence, modality and channel axes
of a ``[B, L, K, D]`` tensor, with a residual (optionally projected) and a LayerNorm per axis."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}

Sizes = tuple[int, int, int]


def parse_sizes(spec: str) -> list[Sizes]:
    """``"50-3-128=10-3-128"`` -> ``[(50, 3, 128), (10, 3, 128)]`` (one [L, K, D] per block)."""
    try:
        blocks = [tuple(int(v) for v in part.split("-")) for part in spec.split("=")]
    except ValueError as e:
        raise ValueError(f"bad CubeMLP sizes {spec!r}; expected like '50-3-128=10-3-128'") from e
    if not blocks or any(len(b) != 3 or min(b) < 1 for b in blocks):
        raise ValueError(f"bad CubeMLP sizes {spec!r}; each block needs three positive sizes L-K-D")
    return blocks  # type: ignore[return-value]


def parse_flags(spec: str) -> list[bool]:
    """``"1-0"`` -> ``[True, False]``."""
    try:
        return [bool(int(v)) for v in spec.split("-")]
    except ValueError as e:
        raise ValueError(f"bad flag list {spec!r}; expected like '1-1'") from e


class AxisMLP(nn.Module):
    """``W2 act(W1 z + b1) + b2`` on the last dimension (biases only with ``bias``)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden, bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(n_hidden, n_out, bias=bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(z)))


class AxisMixing(nn.Module):
    """One mixing step on the last axis: post-LN ``LN(Dropout(MLP(z)) + P(z))`` or pre-LN
    ``P(z) + Dropout(MLP(LN(z)))``; P is a bias-free projection or the identity."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, activation: str, bias: bool, dropout: float,
                 project: bool, ln_first: bool) -> None:
        super().__init__()
        if not project and n_in != n_out:
            raise ValueError(f"a CubeMLP axis without residual projection needs in == out ({n_in} != {n_out})")
        self.mlp = AxisMLP(n_in, n_hidden, n_out, activation, bias)
        self.proj = nn.Linear(n_in, n_out, bias=False) if project else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(n_in if ln_first else n_out, eps=1e-6)
        self.ln_first = ln_first

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.ln_first:
            return self.proj(z) + self.drop(self.mlp(self.norm(z)))
        return self.norm(self.drop(self.mlp(z)) + self.proj(z))


class CubeBlock(nn.Module):
    """``[B, L, K, D] -> [B, L', K', D']``: sequence, then modality, then channel mixing."""

    def __init__(self, d_in: Sizes, d_hidden: Sizes, d_out: Sizes, activation: str = "gelu", bias: bool = False,
                 dropouts: tuple[float, float, float] = (0.0, 0.0, 0.0), project: bool = True,
                 ln_first: bool = False) -> None:
        super().__init__()
        steps = [AxisMixing(i, h, o, activation, bias, p, project, ln_first)
                 for i, h, o, p in zip(d_in, d_hidden, d_out, dropouts)]
        self.seq, self.mod, self.chan = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.seq(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # mix along L (LN across time)
        x = self.mod(x.permute(0, 1, 3, 2)).permute(0, 1, 3, 2)  # mix along K
        return self.chan(x)  # mix along D


class MLPEncoder(nn.Module):
    """A stack of CubeBlocks; block i maps ``sizes[i-1] -> hiddens[i] -> outs[i]`` (sizes[-1] = d_in)."""

    def __init__(self, d_in: Sizes, hiddens: list[Sizes], outs: list[Sizes], activation: str = "gelu",
                 bias: bool = False, dropouts: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 res_project: list[bool] | None = None, ln_first: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        res_project = res_project if res_project is not None else [True] * len(outs)
        if not len(hiddens) == len(outs) == len(res_project):
            raise ValueError("CubeMLP needs as many hidden sizes, output sizes and res_project flags as blocks")
        blocks, size = [], d_in
        for hid, out, proj in zip(hiddens, outs, res_project):
            blocks.append(CubeBlock(size, hid, out, activation, bias, dropouts, proj, ln_first))
            size = out
        self.blocks = nn.Sequential(*blocks)
        self.d_out: Sizes = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
