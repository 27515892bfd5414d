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

BLOCK_ELEMENTS = 1 << 18  # scores per block and thread (1 MiB of float32): fits in L2
MASKED_ROWS = 64  # query rows per block under a future mask, so hidden key ranges can be skipped


def _blocks(bh: int, len_q: int, len_k: int, offset: int | None) -> list[tuple[int, int, int, int, int]]:
    """(b0, b1, i0, i1, kk) tiles of (B·H, Lq): query rows [i0, i1) see at most keys [0, kk)."""
    size = BLOCK_ELEMENTS * torch.get_num_threads()  # more work per parallel op when threads share it
    rows = max(1, min(len_q, size // max(len_k, 1), MASKED_ROWS if offset is not None else len_q))
    out = []
    for i0 in range(0, len_q, rows):
        i1 = min(len_q, i0 + rows)
        kk = len_k if offset is None else max(1, min(len_k, i1 - 1 + offset))
        per_bh = max(1, size // max((i1 - i0) * kk, 1))
        out.extend((b0, min(bh, b0 + per_bh), i0, i1, kk) for b0 in range(0, bh, per_bh))
    return out


def _weights(q: torch.Tensor, k: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
    """Softmax weights of one block from pre-scaled queries; ``hidden`` (rows, kk) is 0 or −inf."""
    s = torch.bmm(q, k.transpose(1, 2))
    if hidden is not None:
        s.add_(hidden)  # an additive −inf mask: much faster than masked_fill_ on CPU
    return torch.softmax(s, dim=-1)


def _hidden(len_q: int, len_k: int, offset: int | None, device: torch.device) -> torch.Tensor | None:
    """Additive (len_q, len_k) mask: −inf where j − i ≥ offset, else 0."""
    if offset is None:
        return None
    i = torch.arange(len_q, device=device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    zero = torch.zeros((), device=device)
    return torch.where((j - i) >= offset, torch.full((), float("-inf"), device=device), zero)


def _block_hidden(hidden: torch.Tensor | None, i0: int, i1: int, kk: int, offset: int | None) -> torch.Tensor | None:
    """The block's slice of the mask, or None when the block has no hidden entry (kk − 1 − i0 < offset)."""
    if hidden is None or offset is None or kk - 1 - i0 < offset:
        return None
    return hidden[i0:i1, :kk]


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale: float, p: float, offset: int | None):  # type: ignore[override]
        bh, len_q, _ = q.shape
        len_k = k.shape[1]
        qs = q * scale
        hidden = _hidden(len_q, len_k, offset, q.device)
        keep_scale = 1.0 / (1.0 - p)
        rows_out: list[list[torch.Tensor]] = []
        masks = []
        last_i0 = -1
        for b0, b1, i0, i1, kk in _blocks(bh, len_q, len_k, offset):
            w = _weights(qs[b0:b1, i0:i1], k[b0:b1, :kk], _block_hidden(hidden, i0, i1, kk, offset))
            if p > 0:
                r = torch.rand(w.shape, dtype=w.dtype, device=w.device)
                masks.append(r >= p)  # kept for backward at 1 byte per weight
                w.mul_(r.ge_(p))  # the same mask as 0/1 floats (a bool operand would be converted)
            o = torch.bmm(w, v[b0:b1, :kk])
            if i0 != last_i0:
                rows_out.append([])
                last_i0 = i0
            rows_out[-1].append(o)
        out = torch.cat([torch.cat(r, dim=0) for r in rows_out], dim=1)
        if p > 0:
            out.mul_(keep_scale)
        ctx.save_for_backward(q, k, v, out)
        ctx.masks, ctx.scale, ctx.p, ctx.offset = masks, scale, p, offset
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, out = ctx.saved_tensors
        scale, p, offset = ctx.scale, ctx.p, ctx.offset
        keep_scale = 1.0 / (1.0 - p)
        grad_out = grad_out.contiguous()
        qs = q * scale
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        # softmax backward: dS = P ⊙ (dP − Σ_j dP_ij P_ij), and Σ_j dP_ij P_ij = dO_i · O_i
        delta = (grad_out * out).sum(-1, keepdim=True) / keep_scale
        bh, len_q, _ = q.shape
        hidden = _hidden(len_q, k.shape[1], offset, q.device)
        for n, (b0, b1, i0, i1, kk) in enumerate(_blocks(bh, len_q, k.shape[1], offset)):
            qb, kb, vb, gb = qs[b0:b1, i0:i1], k[b0:b1, :kk], v[b0:b1, :kk], grad_out[b0:b1, i0:i1]
            w = _weights(qb, kb, _block_hidden(hidden, i0, i1, kk, offset))
            d_w = torch.bmm(gb, vb.transpose(1, 2))  # dL/dD, up to the keep scale
            if p > 0:
                m = ctx.masks[n].to(w.dtype)
                dv[b0:b1, :kk] += torch.bmm((w * m).transpose(1, 2), gb).mul_(keep_scale)
                d_w.mul_(m)
            else:
                dv[b0:b1, :kk] += torch.bmm(w.transpose(1, 2), gb)
            d_s = d_w.sub_(delta[b0:b1, i0:i1]).mul_(w)  # dS / keep_scale
            dq[b0:b1, i0:i1] += torch.bmm(d_s, kb)
            dk[b0:b1, :kk] += torch.bmm(d_s.transpose(1, 2), qb)
        dq.mul_(scale * keep_scale)
        dk.mul_(keep_scale)  # qb already carries the scale
        return dq, dk, dv, None, None, None


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                      offset: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Attention over (B, H, L, hd) tensors; ``offset`` hides keys j with j − i ≥ offset (None: no mask)."""
    b, h, len_q, hd = q.shape
    scale = hd ** -0.5 if scale is None else scale
    flat = [t.reshape(b * h, t.shape[2], t.shape[3]).contiguous() for t in (q, k, v)]
    out = _BlockedAttention.apply(flat[0], flat[1], flat[2], scale, float(dropout_p), offset)
    return out.view(b, h, len_q, v.shape[3])
