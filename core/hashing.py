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


MEMO_MIN_BYTES = 8 << 20  # smaller files hash in milliseconds: not worth a memo file


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    if size < MEMO_MIN_BYTES:
        return file_sha256(path)
    from msa.core.io import atomic_write_bytes
    from msa.core.packages import msa_home

    memo = msa_home() / "sha256" / f"{json_sha256({'path': path, 'size': size, 'mtime_ns': mtime_ns}, 32)}.txt"
    try:
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    except (OSError, UnicodeDecodeError):
        pass  # no memo yet, or unreadable: compute
    digest = file_sha256(path)
    try:
        atomic_write_bytes(memo, digest.encode())
    except OSError:
        pass  # a read-only home: hashed again next time
    return digest


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file: the identity that spec hashes and bundles record for pretrained weights.

    Computed once per unchanged file (keyed by resolved path, size and mtime): once per process, and for
    files of 8 MiB or more once per machine, memoised under ``$MSA_HOME/sha256/`` (default ``~/.cache/msa``),
    so a fully cached rerun does not re-read MiniLM's 90 MB (0.13 s of its 0.5 s)."""
    p = Path(path).resolve()
    st = p.stat()
    return _cached_sha256(str(p), st.st_size, st.st_mtime_ns)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def json_sha256(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
