"""Identity of a tokenizer vocabulary, read from a model folder's files without torch or transformers.

msa-extract stamps it into every features file with ``text_bert`` ids, and training and bundle
loading compare it (a Chinese vocabulary's ids read by an English encoder are refused). Kept free of
heavy imports so that stamping a features file does not import torch.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from msa.core.hashing import json_sha256


def _vocab_tokens(folder: Path) -> list[str] | None:
    """The tokenizer's tokens in id order, from tokenizer.json, vocab.txt or vocab.json; None if absent."""
    if (folder / "tokenizer.json").is_file():
        vocab = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("model", {}).get("vocab")
        if isinstance(vocab, dict):
            return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        if isinstance(vocab, list):  # Unigram: [token, score] in id order
            return [t[0] if isinstance(t, list) else str(t) for t in vocab]
    if (folder / "vocab.txt").is_file():
        return (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if (folder / "vocab.json").is_file():
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    return None


def _is_cjk(token: str) -> bool:
    t = token.removeprefix("##")
    return len(t) == 1 and "\u4e00" <= t <= "\u9fff"


@functools.lru_cache(maxsize=8)
def vocabulary_identity(folder: str | Path) -> dict[str, Any] | None:
    """Identity of a model folder's tokenizer vocabulary: ``size``, ``sha256`` (of the tokens in id order)
    and ``chinese`` (more than a quarter of the tokens are single CJK characters, as in bert-base-chinese;
    bert-base-uncased has 1.6%). None when the folder has no tokenizer files."""
    tokens = _vocab_tokens(Path(folder))
    if not tokens:
        return None
    share = sum(map(_is_cjk, tokens)) / len(tokens)
    return {"size": len(tokens), "sha256": json_sha256(tokens, 32), "chinese": share > 0.25}
