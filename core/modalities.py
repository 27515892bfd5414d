"""Modality names, in one place.

Extractors and msa-extract say ``text``/``audio``/``visual`` (plus ``asr``); the MMSA schema, the
model batch and bundles say ``text``/``audio``/``vision``. Users may type either, and MMSA-style
aliases (``video``, ``acoustic``) are accepted where a modality is named.
"""
from __future__ import annotations

EXTRACT = ("text", "audio", "visual")  # extractor / msa-extract names
BATCH = ("text", "audio", "vision")  # MMSA schema, model batch and bundle names
TO_BATCH = dict(zip(EXTRACT, BATCH))
TO_EXTRACT = dict(zip(BATCH, EXTRACT))
ALIASES = {"video": "vision", "acoustic": "audio"}


def batch_name(name: str) -> str:
    """Any accepted spelling -> the batch/MMSA key (``visual`` -> ``vision``); unknown names pass through."""
    name = ALIASES.get(name, name)
    return TO_BATCH.get(name, name)


def extract_name(name: str) -> str:
    """Any accepted spelling -> the extractor-side name (``vision`` -> ``visual``); others pass through."""
    return TO_EXTRACT.get(batch_name(name), name)
