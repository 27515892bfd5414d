"""Content-addressed, crash-safe feature cache: ``<out>/cache/<extractor>/<spec_hash>/<key>.pkl``.

* A file is written to a temp name and ``os.replace``d into place, so its presence means it is complete.
* Every file carries a sha256 of its payload; a truncated or corrupt file is deleted and reported as a
  miss (re-extracted), never trusted.
* ``ClipLock`` is a per-clip ``flock`` claim: two processes on one output folder never extract the same
  clip at once, and a killed holder releases its claim automatically (the kernel drops the lock).

Cache files are pickles: only point msa at output folders you created (see docs/extract.md).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import socket
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from msa.core.hashing import canonical_json
from msa.core.io import atomic_write_bytes

log = logging.getLogger("msa.cache")

MAGIC = b"MSACACHE1\n"
_DIGEST_LEN = 64  # hex sha256


def pack(obj: Any) -> bytes:
    """Pickle ``obj`` behind a magic line and the payload's sha256."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def unpack(data: bytes) -> Any:
    """Inverse of ``pack``; raises ValueError when the bytes are truncated, corrupt or foreign."""
    head = len(MAGIC) + _DIGEST_LEN + 1
    if len(data) < head or not data.startswith(MAGIC):
        raise ValueError("not an msa cache file or truncated header")
    digest, payload = data[len(MAGIC):head - 1].decode("ascii", "replace"), data[head:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError("checksum mismatch (truncated or corrupt)")
    return pickle.loads(payload)


class FeatureCache:
    """Per-stage results keyed by (extractor name, spec_hash, content key)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir) / "cache"

    def path(self, name: str, spec_hash: str, key: str) -> Path:
        return self.root / name / spec_hash / f"{key}.pkl"

    def has(self, name: str, spec_hash: str, key: str) -> bool:
        return self.path(name, spec_hash, key).is_file()

    def load(self, name: str, spec_hash: str, key: str) -> Any | None:
        """The cached object, or None on a miss. A corrupt file is removed and counts as a miss."""
        p = self.path(name, spec_hash, key)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return unpack(data)
        except (ValueError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as e:
            log.warning("cache file %s is unusable (%s); it will be re-extracted", p, e)
            with suppress(FileNotFoundError):
                p.unlink()
            return None

    def save(self, name: str, spec_hash: str, key: str, obj: Any) -> Path:
        p = self.path(name, spec_hash, key)
        atomic_write_bytes(p, pack(obj))
        return p

    def write_spec(self, name: str, spec_hash: str, spec: dict[str, Any]) -> None:
        """A human-readable ``spec.json`` next to the entries (written once per spec folder)."""
        p = self.root / name / spec_hash / "spec.json"
        if not p.exists():
            atomic_write_bytes(p, (json.dumps(json.loads(canonical_json(spec)), indent=2) + "\n").encode())

    def sweep_temp(self, min_age_s: float = 600.0) -> int:
        """Remove temp and stop files left by killed runs (their pid is gone, or they are old). Returns the count."""
        removed = 0
        if not self.root.is_dir():
            return 0
        now = time.time()
        for tmp in [*self.root.rglob(".*.tmp"), *self.root.glob(".stop-*")]:
            pid = _pid_of(tmp.name)
            try:
                old = now - tmp.stat().st_mtime > min_age_s
            except FileNotFoundError:
                continue
            if old or (pid is not None and pid != os.getpid() and not _alive(pid)):
                with suppress(FileNotFoundError):
                    tmp.unlink()
                    removed += 1
        return removed

    def lock(self, key: str, *, wait: bool = False) -> "ClipLock | None":
        """Claim clip ``key`` for this process; None if another process holds it and ``wait`` is False."""
        return ClipLock.acquire(self.root / "locks" / f"{key}.lock", wait=wait)


def _pid_of(name: str) -> int | None:
    """The writer's pid in ``.<file>.<pid>.<random>.tmp`` or ``.stop-<pid>``."""
    with suppress(ValueError, IndexError):
        return int(name[len(".stop-"):]) if name.startswith(".stop-") else int(name.split(".")[-3])
    return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: a SIGKILLed worker whose parent died stays one until something
    reaps it, and a rerun that starts meanwhile would otherwise leave its temp files in place."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state is the field after the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class ClipLock:
    """An exclusive ``flock`` on ``locks/<key>.lock``; the file names its holder (pid@host) for messages."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, path: Path, *, wait: bool = False, poll_s: float = 0.2) -> "ClipLock | None":
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not wait:
                    return None
                time.sleep(poll_s)
                continue
            try:  # the previous holder may have unlinked the file between our open and flock
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
            return cls(path, fd)

    @staticmethod
    def holder(path: Path) -> str:
        with suppress(OSError):
            return path.read_text().strip() or "another process"
        return "another process"

    def release(self) -> None:
        if self._fd < 0:
            return
        with suppress(FileNotFoundError):
            os.unlink(self.path)  # unlink while still holding the lock, so no one locks a stale inode
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "ClipLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
