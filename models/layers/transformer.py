"""The fairseq-style transformer encoder used by MulT (MODELS.md 6.4), batch-first.

Pre-LN layers whose first LayerNorm normalises query, key and value; packed in-projection with
xavier-uniform weights and zero biases; an optional "future" mask offset by the length difference.
Attention (softmax of the scaled scores, dropout on the weights, weighted sum: fairseq's computation)
runs through ``blocked_attention`` on CPU (same result; with dropout 2.5 to 3.5x faster than SDPA's
math path, no (L, L) tensors kept, robust on a busy machine) and through
``torch.nn.functional.scaled_dot_product_attention`` on CUDA.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocked_attention import blocked_attention


def future_mask(len_q: int, len_k: int, device: torch.device | None = None) -> torch.Tensor | None:
    """Boolean (len_q, len_k) "may attend" mask: query i sees key j iff j − i < 1 + |len_k − len_q|.

    Returns None when nothing is masked (e.g. a long query over a short key sequence).
    """
    offset = 1 + abs(len_k - len_q)
    return None if offset > len_k - 1 else visible(len_q, len_k, offset, device)


def visible(len_q: int, len_k: int, offset: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (len_q, len_k) mask of the keys with j − i < offset."""
    i = torch.arange(len_q, device=device)[:, None]
    return (torch.arange(len_k, device=device)[None, :] - i) < offset


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                   offset: int | None = None) -> torch.Tensor:
    """``scaled_dot_product_attention`` on (B, H, L, hd) with keys j − i ≥ ``offset`` hidden (None: no mask)."""
    if offset == 1 and q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    mask = None if offset is None else visible(q.shape[2], k.shape[2], offset, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """fairseq sinusoidal embeddings for positions 1..length: [sin | cos] halves, zero column if dim is odd."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -scale)
    pos = torch.arange(1, length + 1, device=device, dtype=torch.float32)[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(pos), torch.cos(pos)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class MultiheadAttention(nn.Module):
    """Multi-head attention with a packed (3d, d) in-projection (xavier-uniform, zero bias)."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.attn_dropout = dim, heads, attn_dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masked: bool = False,
                mask_len_q: int | None = None) -> torch.Tensor:
        """(B, Lq, d) attending over (B, Lk, d). ``masked`` applies ``future_mask``; ``mask_len_q``
        is the full query length when ``q`` holds only its last rows (the readout shortcut)."""
        w, bias = self.in_proj_weight, self.in_proj_bias
        d = self.dim
        if q is k and k is v:
            qq, kk, vv = F.linear(q, w, bias).chunk(3, dim=-1)
        else:
            qq = F.linear(q, w[:d], bias[:d])
            if k is v:
                kk, vv = F.linear(k, w[d:], bias[d:]).chunk(2, dim=-1)
            else:
                kk, vv = F.linear(k, w[d:2 * d], bias[d:2 * d]), F.linear(v, w[2 * d:], bias[2 * d:])
        offset = None
        if masked:
            len_q, len_k = q.shape[1], k.shape[1]
            full_q = mask_len_q or len_q
            # query row i (local) is row i + full_q − len_q of the full mask: hide keys j − i ≥ offset
            off = 1 + abs(len_k - full_q) + (full_q - len_q)
            offset = off if off <= len_k - 1 else None  # None: no key is hidden from any row
        drop = self.attn_dropout if self.training else 0.0
        attend = sdpa_attention if q.is_cuda else blocked_attention
        out = attend(self._split(qq), self._split(kk), self._split(vv), drop, offset)
        b, h, n, hd = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * hd))


class TransformerEncoderLayer(nn.Module):
    """x += Drop(MHA(LN0(x), LN0(k), LN0(v))); x += Drop(fc2(Drop(ReLU(fc1(LN1(x))))))."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, relu_dropout: float = 0.0,
                 res_dropout: float = 0.0, attn_mask: bool = False) -> None:
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, attn_dropout)
        self.relu_dropout, self.res_dropout, self.attn_mask = relu_dropout, res_dropout, attn_mask
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.norm0 = nn.LayerNorm(dim)
        self.norm1 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """``last_only`` computes only the final time step (same value; used for the readout)."""
        len_q = x.shape[1]
        h = self.norm0(x)
        if k is None:
            kk = vv = h
        else:
            kk = self.norm0(k)
            vv = kk if v is k else self.norm0(v)
        if last_only:
            x, h = x[:, -1:], h[:, -1:]
        h = self.attn(h, kk, vv, masked=self.attn_mask, mask_len_q=len_q)
        x = x + F.dropout(h, self.res_dropout, self.training)
        h = F.relu(self.fc1(self.norm1(x)))
        h = self.fc2(F.dropout(h, self.relu_dropout, self.training))
        return x + F.dropout(h, self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """√d-scaled inputs, embedding dropout (separately on keys and values), ``layers`` layers, final LayerNorm.

    With ``kv`` given it is a crossmodal transformer (queries x, keys/values kv); otherwise self-attention.
    """

    def __init__(self, dim: int, heads: int, layers: int, attn_dropout: float = 0.0, relu_dropout: float = 0.0,
                 res_dropout: float = 0.0, embed_dropout: float = 0.0, attn_mask: bool = False,
                 position_embedding: bool = False) -> None:
        super().__init__()
        self.dim, self.embed_dropout, self.position_embedding = dim, embed_dropout, position_embedding
        self.scale = math.sqrt(dim)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(dim, heads, attn_dropout, relu_dropout, res_dropout, attn_mask)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        y = self.scale * x
        if self.position_embedding:
            y = y + sinusoidal_positions(x.shape[1], self.dim, x.device).to(x.dtype)
        return y

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """(B, Lq, d) [, (B, Lk, d)] -> (B, Lq, d), or (B, 1, d) for the last step with ``last_only``."""
        h = F.dropout(self._embed(x), self.embed_dropout, self.training)
        k = v = None
        if kv is not None:
            e = self._embed(kv)
            if self.training and self.embed_dropout > 0:
                k, v = F.dropout(e, self.embed_dropout, True), F.dropout(e, self.embed_dropout, True)
            else:
                k = v = e
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            h = layer(h, k, v, last_only=last_only and i == n - 1)
        if last_only and n == 0:
            h = h[:, -1:]
        return self.norm(h)
