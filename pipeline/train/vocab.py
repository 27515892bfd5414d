"""Do a features file's ``text_bert`` ids and a model's text encoder share one vocabulary?

msa-extract stamps ``config["text_vocab"]`` (size, sha256 of the tokens, chinese) into every file it
writes. Ids read with another vocabulary are valid integers that mean other tokens, so nothing fails
downstream: MMSA's SIMS files hold bert-base-chinese ids, which MiniLM's English WordPiece would read
without an error. Training, ``msa-eval`` and bundle loading therefore check here, once.
"""
from __future__ import annotations

from typing import Any

from msa.core.errors import DataError, UsageError

CHINESE_DATASETS = ("sims", "simsv2")  # MMSA's files: bert-base-chinese ids
ENGLISH_DATASETS = ("mosi", "mosei")  # MMSA's files: bert-base-uncased ids


def text_encoder_record(config: Any, preset: str = "default") -> dict[str, Any] | None:
    """``{"name", "vocabulary"}`` of a config's ``text_encoder`` (None for a model without one).

    An encoder that is not on disk (a ``paper`` preset names bert-base-uncased, bert-base-chinese, ...,
    none of which ships offline) is a one-line ``UsageError`` before any data is read into a model.
    """
    from msa.models.layers.text import TINY, encoder_folder, vocabulary_identity

    name = getattr(config, "text_encoder", None)
    if not name:
        return None
    folder = encoder_folder(name)
    if folder is None and name != TINY:
        raise UsageError(f"text encoder {name!r} (preset {preset!r}) is not available offline; give its local "
                         "folder (config.json, tokenizer and weights) with --text-encoder DIR")
    return {"name": name, "vocabulary": vocabulary_identity(str(folder)) if folder is not None else None}


def _describe(v: dict[str, Any]) -> str:
    return f"{'Chinese' if v.get('chinese') else 'non-Chinese'} vocabulary of {v.get('size')} tokens, {v.get('sha256')}"


def check_vocabulary(stamp: Any, encoder: dict[str, Any] | None, dataset: str, where: str = "the file") -> None:
    """Refuse ids from another vocabulary than the encoder's (one-line ``DataError``).

    ``stamp`` is the file's ``text_vocab`` (None when unstamped, e.g. MMSA's own files): then a Chinese
    dataset read with a non-Chinese vocabulary, or MOSI/MOSEI read with a Chinese one, is refused.
    Nothing is checked when the encoder's vocabulary is unknown (``tiny-random``, no tokenizer files).
    """
    vocab = (encoder or {}).get("vocabulary")
    if not vocab:
        return
    name = encoder["name"]  # type: ignore[index]
    if isinstance(stamp, dict) and stamp.get("sha256"):
        if stamp["sha256"] != vocab["sha256"]:
            raise DataError(f"{where}: its text_bert ids come from a {_describe(stamp)}, but text encoder {name!r} "
                            f"reads a {_describe(vocab)}; re-extract with that encoder's tokenizer "
                            "(--extractors text:hf --set text.model=FOLDER) or set text_encoder to the matching one")
        return
    if dataset in CHINESE_DATASETS and not vocab["chinese"]:
        raise DataError(f"{where}: {dataset} files carry no vocabulary stamp and MMSA's hold bert-base-chinese ids, "
                        f"but text encoder {name!r} has a non-Chinese vocabulary; set text_encoder to a local "
                        "bert-base-chinese folder (--text-encoder DIR, or --preset paper --text-encoder DIR)")
    if dataset in ENGLISH_DATASETS and vocab["chinese"]:
        raise DataError(f"{where}: {dataset} files carry no vocabulary stamp and MMSA's hold bert-base-uncased ids, "
                        f"but text encoder {name!r} has a Chinese vocabulary; use an English encoder")


def check_bundle_encoder(path: Any, meta: dict[str, Any]) -> None:
    """A bundle's text encoder must still have the vocabulary it was trained with (one-line ``BundleError``)."""
    from msa.core.errors import BundleError
    from msa.models.layers.text import encoder_vocabulary

    recorded = meta.get("text_encoder")
    if recorded is None:
        return
    if not isinstance(recorded, dict) or not isinstance(recorded.get("name"), str):
        raise BundleError(f"{path}: 'text_encoder' must be an object with a 'name'")
    was, now = recorded.get("vocabulary"), encoder_vocabulary(recorded["name"])
    if isinstance(was, dict) and now is not None and was.get("sha256") != now["sha256"]:
        raise BundleError(f"{path}: text encoder {recorded['name']!r} now has a {_describe(now)}; the bundle was "
                          f"trained on a {_describe(was)}")
