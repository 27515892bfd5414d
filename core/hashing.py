"""Stable hashes for cache keys and provenance, and the weights-identity hash of model files."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file, computed once per process for an unchanged file (keyed by path, size
    and mtime): the identity that spec hashes and bundles record for pretrained weights."""
    st = Path(path).stat()
    return _cached_sha256(str(path), st.st_size, st.st_mtime_ns)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def json_sha256(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
