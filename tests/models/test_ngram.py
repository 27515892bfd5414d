"""The hashed n-gram head: which buckets a sequence lights, and the normalised binary bag it scores."""
from __future__ import annotations

import pytest
import torch

from msa.models.layers.ngram import BIGRAM_MIX, HashedNgrams


def test_buckets_are_unigrams_and_bigrams_modulo_the_table() -> None:
    head = HashedNgrams(1000)
    got = head.features(torch.tensor([5, 1007, 5]))
    uni = {5, 7}
    bi = {(5 * BIGRAM_MIX + 1007) % 1000, (1007 * BIGRAM_MIX + 5) % 1000}
    assert got.tolist() == sorted(uni | bi)  # distinct: the repeated token counts once


def test_score_is_the_sum_over_distinct_features_over_their_root_count_plus_bias() -> None:
    head = HashedNgrams(64)
    with torch.no_grad():
        head.table.weight.copy_(torch.arange(64, dtype=torch.float32)[:, None])
        head.bias.fill_(0.5)
    seqs = [torch.tensor([3, 4, 3, 4]), torch.tensor([9]), torch.tensor([], dtype=torch.long)]
    got = head(seqs)
    for s, score in zip(seqs[:2], got[:2]):
        feats = head.features(s)
        assert score.item() == pytest.approx(feats.sum().item() / len(feats) ** 0.5 + 0.5, rel=1e-6)
    assert got[2].item() == 0.5  # no ids: the bias alone
    assert head([]).shape == (0,)


def test_the_same_sequence_scores_the_same_in_any_batch() -> None:
    torch.manual_seed(0)
    head = HashedNgrams(256)
    torch.nn.init.normal_(head.table.weight)
    a, b = torch.tensor([1, 2, 3]), torch.tensor([7, 7, 8, 9, 10])
    alone = head([a])[0]
    assert torch.allclose(head([b, a])[1], alone) and torch.allclose(head([a, b, a])[2], alone)
