"""Blocked scaled-dot-product attention with dropout on the weights, for CPU training.

``F.scaled_dot_product_attention`` falls back to its "math" path whenever attention dropout is on:
it materialises several (B·H, Lq, Lk) float tensors, samples a Bernoulli mask (slow on CPU) and
keeps them all for backward. For MulT on MOSI-length sequences (500 audio frames) that is the whole
cost of training. ``blocked_attention`` computes the same thing, block by block, so each block's
scores stay in cache:

    P = softmax(q kᵀ · scale + mask),   D = P ⊙ M / (1 − p),   out = D v,   M ~ Bernoulli(1 − p)

Backward recomputes P per block (flash-attention style) and keeps only the dropout masks (1 byte per
weight). Blocks of queries skip the keys that the "future" mask hides (MulT's offset causal mask).
Masks come from ``ops.keep_mask`` (global generator; p rounded to a multiple of 2^-16).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from .ops import keep_mask, keep_scale

BLOCK_ELEMENTS = 1 << 18  # scores per block (1 MiB of float32): fits in L2
MASKED_ROWS = 64  # query rows per block under a future mask, so hidden key ranges can be skipped

Tile = tuple[int, int, int, int, int]  # (b0, b1, i0, i1, kk): rows [i0, i1) of heads [b0, b1) see keys [0, kk)


def _tiles(b_lo: int, b_hi: int, len_q: int, len_k: int, offset: int | None) -> list[Tile]:
    """Blocks of about BLOCK_ELEMENTS scores covering heads [b_lo, b_hi) and all query rows."""
    rows = max(1, min(len_q, BLOCK_ELEMENTS // max(len_k, 1), MASKED_ROWS if offset is not None else len_q))
    out = []
    for i0 in range(0, len_q, rows):
        i1 = min(len_q, i0 + rows)
        kk = len_k if offset is None else max(1, min(len_k, i1 - 1 + offset))
        per_bh = max(1, BLOCK_ELEMENTS // max((i1 - i0) * kk, 1))
        out.extend((b0, min(b_hi, b0 + per_bh), i0, i1, kk) for b0 in range(b_lo, b_hi, per_bh))
    return out


def _parts(bh: int, len_q: int, len_k: int, offset: int | None) -> list[list[Tile]]:
    """One list of tiles per worker thread, over disjoint head ranges (so outputs never overlap)."""
    n = max(1, min(torch.get_num_threads(), bh))
    bounds = [bh * i // n for i in range(n + 1)]
    return [_tiles(bounds[i], bounds[i + 1], len_q, len_k, offset) for i in range(n)]


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def _single_threaded_worker() -> None:
    torch.set_num_threads(1)
    torch.get_num_threads()  # settles this thread's intra-op setting before the caller restores the global one


def _run(fn: Callable[[int], None], n: int) -> None:
    """Run fn(0..n-1) on n worker threads, each single-threaded inside torch.

    Parallelism across blocks instead of inside each small op: no OpenMP barrier per op, which on a
    busy machine (more runnable threads than cores) made every op wait for a descheduled thread.
    """
    global _POOL, _POOL_SIZE
    if n == 1:
        fn(0)
        return
    if _POOL is None or _POOL_SIZE < n:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        threads = torch.get_num_threads()
        _POOL, _POOL_SIZE = ThreadPoolExecutor(n, thread_name_prefix="msa-attention"), n
        barrier = threading.Barrier(n)
        list(_POOL.map(lambda _: (_single_threaded_worker(), barrier.wait()), range(n)))
        torch.set_num_threads(threads)  # the workers changed the process-wide default; restore it
    for f in [_POOL.submit(fn, i) for i in range(n)]:
        f.result()


def _generators(n: int, device: torch.device) -> list[torch.Generator]:
    """Per-part generators seeded from the global one: the masks do not depend on thread timing."""
    seeds = torch.randint(0, 2**62, (n,)).tolist()
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


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


def _block_hidden(hidden: torch.Tensor | None, i0: int, i1: int, kk: int,
                  offset: int | None) -> torch.Tensor | None:
    """The block's slice of the mask, or None when it hides nothing (kk − 1 − i0 < offset)."""
    if hidden is None or offset is None or kk - 1 - i0 < offset:
        return None
    return hidden[i0:i1, :kk]


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale: float, p: float, offset: int | None):  # type: ignore[override]
        bh, len_q, _ = q.shape
        qs = q * scale
        hidden = _hidden(len_q, k.shape[1], offset, q.device)
        scale_keep = keep_scale(p) if p > 0 else 1.0
        parts = _parts(bh, len_q, k.shape[1], offset)
        gens = _generators(len(parts), q.device) if p > 0 else []
        masks: list[list[torch.Tensor]] = [[] for _ in parts]
        out = q.new_empty(bh, len_q, v.shape[2])

        def work(n: int) -> None:
            with torch.no_grad():
                for b0, b1, i0, i1, kk in parts[n]:
                    w = _weights(qs[b0:b1, i0:i1], k[b0:b1, :kk], _block_hidden(hidden, i0, i1, kk, offset))
                    if p > 0:
                        m = keep_mask(tuple(w.shape), p, w.device, gens[n])[0]
                        masks[n].append(m)  # kept for backward at 1 byte per weight
                        w.mul_(m)
                    out[b0:b1, i0:i1] = torch.bmm(w, v[b0:b1, :kk])

        _run(work, len(parts))
        if p > 0:
            out.mul_(scale_keep)
        ctx.save_for_backward(q, k, v, out)
        ctx.parts, ctx.masks, ctx.keep_scale = parts, masks, scale_keep
        ctx.scale, ctx.p, ctx.offset = scale, p, offset
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, out = ctx.saved_tensors
        scale, p, offset, scale_keep = ctx.scale, ctx.p, ctx.offset, ctx.keep_scale
        grad_out = grad_out.contiguous()
        qs = q * scale
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        # softmax backward: dS = P ⊙ (dP − Σ_j dP_ij P_ij), and Σ_j dP_ij P_ij = dO_i · O_i
        delta = (grad_out * out).sum(-1, keepdim=True) / scale_keep
        hidden = _hidden(q.shape[1], k.shape[1], offset, q.device)

        def work(n: int) -> None:
            with torch.no_grad():
                for t, (b0, b1, i0, i1, kk) in enumerate(ctx.parts[n]):
                    qb, kb, vb, gb = qs[b0:b1, i0:i1], k[b0:b1, :kk], v[b0:b1, :kk], grad_out[b0:b1, i0:i1]
                    w = _weights(qb, kb, _block_hidden(hidden, i0, i1, kk, offset))
                    d_w = torch.bmm(gb, vb.transpose(1, 2))  # dL/dD, up to the keep scale
                    if p > 0:
                        m = ctx.masks[n][t].to(w.dtype)
                        dv[b0:b1, :kk] += torch.bmm((w * m).transpose(1, 2), gb).mul_(scale_keep)
                        d_w.mul_(m)
                    else:
                        dv[b0:b1, :kk] += torch.bmm(w.transpose(1, 2), gb)
                    d_s = d_w.sub_(delta[b0:b1, i0:i1]).mul_(w)  # dS / keep_scale
                    dq[b0:b1, i0:i1] += torch.bmm(d_s, kb)
                    dk[b0:b1, :kk] += torch.bmm(d_s.transpose(1, 2), qb)

        _run(work, len(ctx.parts))
        dq.mul_(scale * scale_keep)
        dk.mul_(scale_keep)  # qb already carries the scale
        return dq, dk, dv, None, None, None


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                      offset: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Attention over (B, H, L, hd) tensors; ``offset`` hides keys j with j − i ≥ offset (None: no mask)."""
    b, h, len_q, hd = q.shape
    scale = hd ** -0.5 if scale is None else scale
    flat = [t.reshape(b * h, t.shape[2], t.shape[3]).contiguous() for t in (q, k, v)]
    out = _BlockedAttention.apply(flat[0], flat[1], flat[2], scale, float(dropout_p), offset)
    return out.view(b, h, len_q, v.shape[3])
