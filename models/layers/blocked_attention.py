"""Blocked scaled-dot-product attention with dropout on the weights, for CPU training.

``F.scaled_dot_product_attention`` falls back to its "math" path whenever attention dropout is on:
it materialises several (B·H, Lq, Lk) float tensors, samples a Bernoulli mask (slow on CPU) and
keeps them all for backward. For MulT on MOSI-length sequences (500 audio frames) that is the whole
cost of training. ``blocked_attention`` computes the same thing, block by block, so each block's
scores stay in cache:

    P = softmax(q kᵀ · scale + mask),   D = P ⊙ M / (1 − p),   out = D v,   M ~ Bernoulli(1 − p)

Backward recomputes P per block (flash-attention style) and keeps only the dropout masks (1 byte per
weight). Blocks of queries skip the keys that the "future" mask hides (MulT's offset causal mask).
The mask is drawn as ``rand >= p`` (the distribution of ``F.dropout``, from the global generator).
"""
from __future__ import annotations

import torch

BLOCK_ELEMENTS = 1 << 18  # scores per block (1 MiB of float32): fits in L2


def _visible_keys(i1: int, len_k: int, offset: int | None) -> int:
    """Number of leading keys any query row < i1 may see under the future mask with this offset."""
    return len_k if offset is None else max(1, min(len_k, i1 - 1 + offset))


def _blocks(bh: int, len_q: int, len_k: int, offset: int | None) -> list[tuple[int, int, int, int, int]]:
    """(b0, b1, i0, i1, k) tiles covering (B·H, Lq): query rows [i0, i1) need keys [0, k)."""
    rows = max(1, min(len_q, BLOCK_ELEMENTS // max(len_k, 1)))
    per_bh = max(1, BLOCK_ELEMENTS // max(rows * len_k, 1))
    out = []
    for b0 in range(0, bh, per_bh):
        for i0 in range(0, len_q, rows):
            i1 = min(len_q, i0 + rows)
            out.append((b0, min(bh, b0 + per_bh), i0, i1, _visible_keys(i1, len_k, offset)))
    return out


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float, i0: int, offset: int | None) -> torch.Tensor:
    """Softmax weights of one block; entries with j − i ≥ offset are masked out."""
    s = torch.bmm(q, k.transpose(1, 2)).mul_(scale)
    if offset is not None:
        i = torch.arange(i0, i0 + q.shape[1], device=q.device)[:, None]
        j = torch.arange(k.shape[1], device=q.device)[None, :]
        hidden = (j - i) >= offset
        if bool(hidden.any()):
            s.masked_fill_(hidden, float("-inf"))
    return torch.softmax(s, dim=-1)


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale: float, p: float, offset: int | None):  # type: ignore[override]
        bh, len_q, _ = q.shape
        len_k = k.shape[1]
        out = q.new_empty(bh, len_q, v.shape[2])
        masks = []
        for b0, b1, i0, i1, kk in _blocks(bh, len_q, len_k, offset):
            w = _scores(q[b0:b1, i0:i1], k[b0:b1, :kk], scale, i0, offset)
            if p > 0:
                m = torch.rand(w.shape, dtype=w.dtype, device=w.device) >= p
                masks.append(m)
                w = w.mul_(m).mul_(1.0 / (1.0 - p))
            torch.bmm(w, v[b0:b1, :kk], out=out[b0:b1, i0:i1])
        ctx.save_for_backward(q, k, v, out)
        ctx.masks, ctx.scale, ctx.p, ctx.offset = masks, scale, p, offset
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, out = ctx.saved_tensors
        scale, p, offset = ctx.scale, ctx.p, ctx.offset
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        delta = (grad_out * out).sum(-1, keepdim=True)  # Σ_j dD_ij D_ij = dO_i · O_i
        bh, len_q, _ = q.shape
        for n, (b0, b1, i0, i1, kk) in enumerate(_blocks(bh, len_q, k.shape[1], offset)):
            qb, kb, vb, gb = q[b0:b1, i0:i1], k[b0:b1, :kk], v[b0:b1, :kk], grad_out[b0:b1, i0:i1]
            w = _scores(qb, kb, scale, i0, offset)
            d_w = torch.bmm(gb, vb.transpose(1, 2))  # dL/dD
            if p > 0:
                keep = ctx.masks[n].to(w.dtype).mul_(1.0 / (1.0 - p))
                dv[b0:b1, :kk] += torch.bmm((w * keep).transpose(1, 2), gb)
                d_w.mul_(keep)  # dL/dP
            else:
                dv[b0:b1, :kk] += torch.bmm(w.transpose(1, 2), gb)
            d_s = d_w.sub_(delta[b0:b1, i0:i1]).mul_(w).mul_(scale)  # softmax backward, with the scale folded in
            dq[b0:b1, i0:i1] += torch.bmm(d_s, kb)
            dk[b0:b1, :kk] += torch.bmm(d_s.transpose(1, 2), qb)
        ctx.masks = None
        return dq, dk, dv, None, None, None


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                      offset: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Attention over (B, H, L, hd) tensors; ``offset`` hides keys j with j − i ≥ offset (None: no mask)."""
    b, h, len_q, hd = q.shape
    scale = hd ** -0.5 if scale is None else scale
    flat = [t.reshape(b * h, t.shape[2], t.shape[3]).contiguous() for t in (q, k, v)]
    out = _BlockedAttention.apply(flat[0], flat[1], flat[2], scale, float(dropout_p), offset)
    return out.view(b, h, len_q, v.shape[3])
