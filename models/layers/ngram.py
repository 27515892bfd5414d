"""A linear score on hashed token unigrams and bigrams (a bag of n-grams, as in a linear text classifier).

Each sequence of token ids becomes the set of its unigrams ``id % buckets`` and bigrams
``(a * BIGRAM_MIX + b) % buckets`` (integer arithmetic: the same buckets on every machine and run), each
present feature weighted ``1 / sqrt(count of distinct features)`` (an L2-normalised binary bag). The
score is the weighted sum of one learnt value per bucket plus a bias. Collisions are shared buckets,
as in any hashing trick. Used by ``bilingual_text`` beside the e5 head: word pieces that carry
sentiment in review text ("不错", "差") are scored directly, which the pooled sentence vector blurs.
"""
from __future__ import annotations

import torch
from torch import nn

BIGRAM_MIX = 1_000_003  # a prime larger than any e5 token id (250,002), so (a, b) pairs do not alias before the modulo


class HashedNgrams(nn.Module):
    def __init__(self, buckets: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.table = nn.EmbeddingBag(buckets, 1, mode="sum")
        nn.init.zeros_(self.table.weight)
        self.bias = nn.Parameter(torch.zeros(()))

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """The distinct buckets of one 1-d id sequence's unigrams and bigrams (sorted)."""
        ids = ids.long()
        grams = torch.cat([ids % self.buckets, (ids[:-1] * BIGRAM_MIX + ids[1:]) % self.buckets])
        return torch.unique(grams)

    def forward(self, seqs: list[torch.Tensor]) -> torch.Tensor:
        """(B,) scores of B id sequences (an empty sequence scores the bias)."""
        if not seqs:
            return self.bias.new_zeros(0)
        feats = [self.features(s) for s in seqs]
        sizes = [len(f) for f in feats]
        dev = self.table.weight.device
        flat = torch.cat(feats).to(dev)
        weights = torch.cat([torch.full((n,), n ** -0.5) for n in sizes if n]).to(dev) if any(sizes) else None
        offsets = torch.tensor([0, *sizes[:-1]], device=dev).cumsum(0)
        return self.table(flat, offsets, per_sample_weights=weights).squeeze(-1) + self.bias
