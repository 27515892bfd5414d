"""A plain BERT encoder's forward pass in numpy, for feature extraction without torch.

Importing torch costs about 2.5 CPU-seconds and 600 MiB of memory in every extraction process, and
the default text extractor (MiniLM, a 6-layer BERT) needs nothing from it but a forward pass of a few
short windows. ``load_bert_np(folder)`` reads ``config.json`` and memory-maps ``model.safetensors``
(only the embedding rows a text uses are ever read from disk); ``NumpyBert(ids)`` returns the last
hidden states, equal to ``bert.py``'s torch encoder within float32 rounding (tests/models/test_bert_np.py
checks both against each other). It covers what ``bert.py`` covers (plain BERT, GELU, absolute
positions) with float32 or float16 weights, and returns None otherwise, so callers fall back to torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class BertShape:
    """The config.json fields this encoder reads (same names as transformers' BertConfig)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "BertShape | None":
        """None unless the config is an encoder-only BERT with GELU and absolute positions."""
        plain = (cfg.get("model_type") == "bert" and cfg.get("hidden_act", "gelu") == "gelu"
                 and cfg.get("position_embedding_type", "absolute") == "absolute"
                 and not cfg.get("is_decoder") and not cfg.get("add_cross_attention"))
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in cfg.items() if k in names}) if plain else None
        except TypeError:  # a required field is missing
            return None


_DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path: Path) -> dict[str, np.ndarray] | None:
    """Read-only arrays over a memory-mapped ``.safetensors`` file (float32/float16 tensors; others are
    skipped). None when the header is not a safetensors header."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(n)) if 0 < n < 100 * 2**20 else None
        except ValueError:
            return None
    if not isinstance(header, dict):
        return None
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or not isinstance(t, dict) or t.get("dtype") not in _DTYPES:
            continue
        dtype = np.dtype(_DTYPES[t["dtype"]])
        a, b = (8 + n + int(x) for x in t["data_offsets"])
        shape = tuple(int(s) for s in t["shape"])
        if b - a != dtype.itemsize * math.prod(shape) or b > mm.size:
            return None
        out[name] = mm[a:b].view(dtype).reshape(shape)
    return out


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: below float32 rounding of GELU's output)."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as transformers' "gelu" and torch's F.gelu."""
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(np.float32)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    return (xc / np.sqrt(var + np.float32(eps))) * w + b


def _linear(x: np.ndarray, w_t: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x @ w_t + b`` over the last axis, as one 2-D BLAS call (numpy's stacked matmul is slower)."""
    return (x.reshape(-1, x.shape[-1]) @ w_t + b).reshape(*x.shape[:-1], w_t.shape[1])


class NumpyBert:
    """BERT's last hidden states for unpadded windows of token ids, in float32 numpy."""

    def __init__(self, shape: BertShape, weights: dict[str, np.ndarray]) -> None:
        """``weights``: transformers' names and layouts; each layer's dense weights are copied once,
        transposed to (in, out) and query/key/value fused; the embedding tables stay memory-mapped when the
        file stores them in float32 (float16 tables are converted to float32 copies here)."""
        self.config = shape
        w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        e = "embeddings."
        self._emb = tuple(w[e + m] for m in ("word_embeddings.weight", "token_type_embeddings.weight",
                                             "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"))
        self._layers = []
        for i in range(shape.num_hidden_layers):
            p = f"encoder.layer.{i}."
            qkv = [p + f"attention.self.{m}." for m in ("query", "key", "value")]
            self._layers.append((
                np.ascontiguousarray(np.concatenate([w[m + "weight"] for m in qkv]).T),
                np.concatenate([w[m + "bias"] for m in qkv]),
                *self._dense(w, p + "attention.output."),
                *self._dense(w, p + "intermediate."),
                *self._dense(w, p + "output."),
            ))

    @staticmethod
    def _dense(w: dict[str, np.ndarray], p: str) -> tuple[np.ndarray, ...]:
        out = (np.ascontiguousarray(w[p + "dense.weight"].T), w[p + "dense.bias"])
        return out + ((w[p + "LayerNorm.weight"], w[p + "LayerNorm.bias"]) if p + "LayerNorm.weight" in w else ())

    def __call__(self, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None) -> np.ndarray:
        """(B, L) int ids, every position a real token (no padding) -> (B, L, hidden) float32."""
        s = self.config
        ids = np.asarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] > s.max_position_embeddings:
            raise ValueError(f"NumpyBert: need ids (B, L <= {s.max_position_embeddings}), got {ids.shape}")
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, dtype=np.int64)
        word, token_type, position, ln_w, ln_b = self._emb
        h = word[ids] + token_type[types] + position[: ids.shape[1]]
        h = _layer_norm(h, ln_w, ln_b, s.layer_norm_eps)
        for weights in self._layers:
            h = self._layer(h, *weights)
        return h

    def _layer(self, h: np.ndarray, qkv_w: np.ndarray, qkv_b: np.ndarray, ao_w: np.ndarray, ao_b: np.ndarray,
               ao_ln_w: np.ndarray, ao_ln_b: np.ndarray, in_w: np.ndarray, in_b: np.ndarray, out_w: np.ndarray,
               out_b: np.ndarray, out_ln_w: np.ndarray, out_ln_b: np.ndarray) -> np.ndarray:
        s = self.config
        bsz, n, d = h.shape
        heads = s.num_attention_heads
        dh = d // heads
        # (3, B, heads, L, dh), each slice contiguous for the batched matmuls below
        q, k, v = np.ascontiguousarray(_linear(h, qkv_w, qkv_b).reshape(bsz, n, 3, heads, dh).transpose(2, 0, 3, 1, 4))
        scores = np.matmul(q, k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(dh))
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = np.matmul(probs, v).transpose(0, 2, 1, 3).reshape(bsz, n, d)
        h = _layer_norm(_linear(ctx, ao_w, ao_b) + h, ao_ln_w, ao_ln_b, s.layer_norm_eps)
        return _layer_norm(_linear(_gelu(_linear(h, in_w, in_b)), out_w, out_b) + h, out_ln_w, out_ln_b,
                           s.layer_norm_eps)


def _needed(shape: BertShape) -> list[str]:
    names = [f"embeddings.{m}.weight" for m in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    names += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for i in range(shape.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "intermediate.dense", "output.dense"):
            names += [f"{p}{m}.weight", f"{p}{m}.bias"]
        names += [f"{p}{m}.LayerNorm.{t}" for m in ("attention.output", "output") for t in ("weight", "bias")]
    return names


def bert_folder(folder: str | Path) -> tuple[BertShape, Path] | None:
    """The shape and weights file of a plain BERT folder (``config.json`` + ``model.safetensors``), or None
    if either file is missing or the config is not one these encoders cover (numpy here, torch in bert.py)."""
    folder = Path(folder)
    cfg, weights = folder / "config.json", folder / "model.safetensors"
    if not (cfg.is_file() and weights.is_file()):
        return None
    shape = BertShape.from_config(json.loads(cfg.read_text()))
    return None if shape is None else (shape, weights)


def load_bert_np(folder: str | Path) -> NumpyBert | None:
    """The numpy encoder of a plain BERT folder (``config.json`` + ``model.safetensors``), or None if not covered."""
    found = bert_folder(folder)
    if found is None:
        return None
    shape, weights = found
    tensors = read_safetensors(weights)
    if tensors is None:
        return None
    tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
    needed = _needed(shape)
    if any(k not in tensors for k in needed):
        return None
    d, inner = shape.hidden_size, shape.intermediate_size
    expect = {"embeddings.word_embeddings.weight": (shape.vocab_size, d),
              "embeddings.position_embeddings.weight": (shape.max_position_embeddings, d),
              "encoder.layer.0.intermediate.dense.weight": (inner, d)}
    if any(tensors[k].shape != v for k, v in expect.items()) or d % shape.num_attention_heads:
        return None
    return NumpyBert(shape, {k: tensors[k] for k in needed})
