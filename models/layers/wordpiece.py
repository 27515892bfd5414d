"""A BERT folder's WordPiece tokenizer from ``tokenizer.json``, without torch or transformers.

``load_tokenizer(folder)`` wraps ``tokenizer.json`` with the ``tokenizers`` library and answers the calls
of transformers' fast BERT tokenizer that msa makes; it returns None for a folder it does not cover
(another tokenizer class, no tokenizer.json), and callers then use transformers. Kept free of torch so
that text extraction with the numpy encoder (``bert_np.py``) never imports it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class BertTokenizerLite:
    """The calls of transformers' fast BERT tokenizer that msa makes, over a ``tokenizers.Tokenizer``."""

    is_fast = True
    model_input_names = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(self, tokenizer: Any, special: dict[str, str], model_max_length: int) -> None:
        self._tok = tokenizer
        self.model_max_length = model_max_length
        ids = {name: tokenizer.token_to_id(tok) for name, tok in special.items()}
        self.cls_token_id, self.sep_token_id, self.pad_token_id = ids["cls"], ids["sep"], ids["pad"]

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 **_: Any) -> dict[str, list[Any]]:
        enc = self._tok.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, list[Any]] = {"input_ids": list(enc.ids), "token_type_ids": list(enc.type_ids),
                                     "attention_mask": list(enc.attention_mask)}
        if return_offsets_mapping:
            out["offset_mapping"] = [tuple(o) for o in enc.offsets]
        return out


def load_tokenizer(folder: str | Path) -> BertTokenizerLite | None:
    """The WordPiece tokenizer of a BERT folder from ``tokenizer.json``, or None if not covered."""
    folder = Path(folder)
    spec, cfg_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not (spec.is_file() and cfg_path.is_file()):
        return None
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("tokenizer_class") not in ("BertTokenizer", "BertTokenizerFast"):
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(spec))
    tok.no_truncation()
    tok.no_padding()
    special = {k: cfg.get(f"{k}_token", f"[{k.upper()}]") for k in ("cls", "sep", "pad")}
    if any(tok.token_to_id(t) is None for t in special.values()):
        return None
    limit = cfg.get("model_max_length")  # absent: unlimited, as transformers says (10**30)
    return BertTokenizerLite(tok, special, int(limit) if isinstance(limit, (int, float)) else 10**30)
