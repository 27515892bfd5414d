"""Attention building blocks: sinusoidal positions, a CLIP-style pre-LN block, a cross-attention block.

Owned by the HSCL / CLIP-CA-MSA models. ``ResidualAttentionBlock`` keeps open_clip's parameter names
(``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``) so a CLIP text block's state dict loads
into it unchanged (CLIP4Clip's initialisation).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msa.core.errors import UsageError


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """Standard sin/cos positions (length, dim); an odd ``dim`` is built at dim+1 and sliced."""
    even = dim + (dim % 2)
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, even, 2, dtype=torch.float32) * (-math.log(10000.0) / even))
    table = torch.zeros(length, even)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table[:, :dim]


def check_heads(dim: int, heads: int, what: str) -> None:
    if heads < 1 or dim % heads:
        raise UsageError(f"{what}: {heads} attention heads do not divide the width {dim}; choose a divisor of {dim}")


class QuickGELU(nn.Module):
    """CLIP's activation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _MLP(nn.Sequential):
    def __init__(self, width: int, hidden: int, act: nn.Module, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.act = act
        self.drop = nn.Dropout(dropout)
        self.c_proj = nn.Linear(hidden, width)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN Transformer block: ``x + attn(ln_1 x)`` then ``x + mlp(ln_2 x)`` (CLIP's resblock)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.1, mlp_ratio: float = 4.0, quick_gelu: bool = True) -> None:
        super().__init__()
        check_heads(width, heads, "ResidualAttentionBlock")
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = _MLP(width, int(width * mlp_ratio), QuickGELU() if quick_gelu else nn.GELU(), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.drop(self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0])
        return x + self.drop(self.mlp(self.ln_2(x)))


class CrossAttentionBlock(nn.Module):
    """Post-LN cross-attention: ``S = LN(MHA(q, kv) + residual)``, ``out = LN(S + FFN(S))`` (Eq. 9 to 12).

    ``residual="input"`` adds the query input (standard Transformer, PSR); ``"projected"`` adds the
    projected query ``q W_Q`` as the paper's Eq. 11 literally reads.
    """

    RESIDUALS = ("input", "projected")

    def __init__(self, width: int, heads: int, ffn_dim: int | None = None, dropout: float = 0.1, residual: str = "input") -> None:
        super().__init__()
        check_heads(width, heads, "CrossAttentionBlock")
        if residual not in self.RESIDUALS:
            raise UsageError(f"cross-attention residual must be one of {self.RESIDUALS}, got {residual!r}")
        self.residual = residual
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        hidden = ffn_dim or 4 * width
        self.ffn = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.ln_2 = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        s = self.drop(self.attn(query, context, context, key_padding_mask=context_padding_mask, need_weights=False)[0])
        if self.residual == "projected":
            width = query.shape[-1]
            res = F.linear(query, self.attn.in_proj_weight[:width], self.attn.in_proj_bias[:width])
        else:
            res = query
        s = self.ln_1(s + res)
        return self.ln_2(s + self.drop(self.ffn(s)))
