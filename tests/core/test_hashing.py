"""weights_sha256: the digest of a large weights file is memoised per machine and never served stale."""
from __future__ import annotations

import hashlib
import os

import pytest

from msa.core import hashing


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MSA_HOME", str(tmp_path / "home"))
    hashing._cached_sha256.cache_clear()
    yield tmp_path / "home"
    hashing._cached_sha256.cache_clear()


def _weights(path, fill: bytes):
    path.write_bytes(fill * hashing.MEMO_MIN_BYTES)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_large_files_are_hashed_once_per_machine(home, tmp_path, monkeypatch) -> None:
    f = tmp_path / "model.bin"
    truth = _weights(f, b"a")
    assert hashing.weights_sha256(f) == truth
    assert len(list((home / "sha256").iterdir())) == 1
    hashing._cached_sha256.cache_clear()  # a new process: the memo answers, the file is not read
    monkeypatch.setattr(hashing, "file_sha256", lambda p: pytest.fail("re-hashed a memoised file"))
    assert hashing.weights_sha256(f) == truth


def test_a_changed_file_is_hashed_again(home, tmp_path) -> None:
    f = tmp_path / "model.bin"
    _weights(f, b"a")
    first = hashing.weights_sha256(f)
    truth = _weights(f, b"b")  # same size, new content
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    assert hashing.weights_sha256(f) == truth != first


def test_a_damaged_memo_or_a_read_only_home_only_costs_a_rehash(home, tmp_path, monkeypatch) -> None:
    f = tmp_path / "model.bin"
    truth = _weights(f, b"a")
    hashing.weights_sha256(f)
    (memo,) = (home / "sha256").iterdir()
    memo.write_text("not a digest")
    hashing._cached_sha256.cache_clear()
    assert hashing.weights_sha256(f) == truth
    hashing._cached_sha256.cache_clear()
    monkeypatch.setenv("MSA_HOME", str(f))  # a file, so no folder can be made under it
    assert hashing.weights_sha256(f) == truth


def test_small_files_leave_no_memo(home, tmp_path) -> None:
    f = tmp_path / "vocab.txt"
    f.write_bytes(b"x" * 1000)
    assert hashing.weights_sha256(f) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert not (home / "sha256").exists()
