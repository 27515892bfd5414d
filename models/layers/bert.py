"""A plain BERT encoder and its WordPiece tokenizer without importing transformers.

Importing transformers' BERT costs about 3 CPU-seconds (it pulls in torch.distributed and dynamo),
a fifth of msa-predict's cold start, and the embedded default (MiniLM) is a plain BERT.
``load_bert(folder)`` builds the same network from ``config.json`` + ``model.safetensors`` with the
module names of transformers' ``BertModel`` (state dicts are interchangeable), and
``load_tokenizer(folder)`` (torch-free, in ``wordpiece.py``, re-exported here) wraps ``tokenizer.json``
with the ``tokenizers`` library. Both return None for a folder they do not cover (another architecture,
.bin weights, no tokenizer.json); callers then use transformers. ``bert_np.py`` runs the same network
in numpy for extraction. tests/models/test_bert_lite.py checks outputs and ids against transformers.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .bert_np import BertShape, bert_folder
from .wordpiece import BertTokenizerLite, load_tokenizer  # re-exported: their torch-free home

__all__ = ["BertEncoder", "BertLayer", "BertShape", "Embeddings", "BertTokenizerLite", "load_bert", "load_tokenizer"]


class Embeddings(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(s.vocab_size, s.hidden_size, padding_idx=s.pad_token_id)
        self.position_embeddings = nn.Embedding(s.max_position_embeddings, s.hidden_size)
        self.token_type_embeddings = nn.Embedding(s.type_vocab_size, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
        self.dropout = nn.Dropout(s.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(h + self.position_embeddings(positions)))


class _SelfAttention(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.heads = s.num_attention_heads
        self.query = nn.Linear(s.hidden_size, s.hidden_size)
        self.key = nn.Linear(s.hidden_size, s.hidden_size)
        self.value = nn.Linear(s.hidden_size, s.hidden_size)
        self.dropout_p = s.attention_probs_dropout_prob

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = h.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(heads(self.query(h)), heads(self.key(h)), heads(self.value(h)),
                                             attn_mask=additive_mask,
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return ctx.transpose(1, 2).reshape(b, n, d)


class _Residual(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm (transformers' BertSelfOutput / BertOutput)."""

    def __init__(self, d_in: int, s: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
        self.dropout = nn.Dropout(s.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class _Attention(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.self = _SelfAttention(s)
        self.output = _Residual(s.hidden_size, s)

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(h, additive_mask), h)


class _Intermediate(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(s.hidden_size, s.intermediate_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(h))


class BertLayer(nn.Module):
    """One encoder layer; ``additive_mask`` (B, 1, 1, L) is 0 for tokens and a large negative for padding."""

    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.attention = _Attention(s)
        self.intermediate = _Intermediate(s)
        self.output = _Residual(s.intermediate_size, s)

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
        a = self.attention(h, additive_mask)
        return self.output(self.intermediate(a), a)


class _Layers(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(s) for _ in range(s.num_hidden_layers))


class BertEncoder(nn.Module):
    """``embeddings`` + ``encoder.layer``; ``forward`` returns an object with ``last_hidden_state``."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.config = shape
        self.embeddings = Embeddings(shape)
        self.encoder = _Layers(shape)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> SimpleNamespace:
        h = self.embeddings(input_ids, token_type_ids)
        additive = None
        if attention_mask is not None:
            additive = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        for layer in self.encoder.layer:
            h = layer(h, additive)
        return SimpleNamespace(last_hidden_state=h)


def load_bert(folder: str | Path) -> BertEncoder | None:
    """A plain BERT from ``config.json`` + ``model.safetensors`` in eval mode, or None if not covered."""
    found = bert_folder(folder)
    if found is None:
        return None
    shape, weights = found
    from safetensors.torch import load_file

    skip = ("pooler.", "cls.", "embeddings.position_ids", "embeddings.token_type_ids")
    state = {k.removeprefix("bert."): v for k, v in load_file(str(weights)).items()}
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    model = BertEncoder(shape)
    missing, unexpected = model.load_state_dict(state, strict=False)
    return None if missing or unexpected else model.eval()
