"""The feature cache: atomic writes, checksum-verified loads, per-clip locks, temp-file sweeping."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from msa.extractors.base import Features
from msa.pipeline.extract import cache as cache_mod
from msa.core.io import atomic_write_bytes
from msa.pipeline.extract.cache import ClipLock, FeatureCache, pack, unpack

KEY = "ab" * 32


def feats(n: int = 3) -> Features:
    return Features(np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n) / 10, meta={"n": n})


def test_pack_roundtrip_and_corruption_is_detected() -> None:
    blob = pack({"a": np.ones(4)})
    assert np.array_equal(unpack(blob)["a"], np.ones(4))
    for bad in (blob[: len(blob) // 2], blob[:20], b"", b"garbage" * 20,
                blob[:-1] + bytes([blob[-1] ^ 1])):
        with pytest.raises(ValueError):
            unpack(bad)


def test_save_load_path_layout_and_spec_file(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path)
    p = c.save("egemaps", "0123456789abcdef", KEY, feats())
    assert p == tmp_path / "cache" / "egemaps" / "0123456789abcdef" / f"{KEY}.pkl"
    got = c.load("egemaps", "0123456789abcdef", KEY)
    assert np.array_equal(got.data, feats().data) and got.meta == {"n": 3}
    assert c.load("egemaps", "0123456789abcdef", "cd" * 32) is None
    c.write_spec("egemaps", "0123456789abcdef", {"name": "egemaps", "config": {"b": 1, "a": 2}})
    assert '"name": "egemaps"' in (p.parent / "spec.json").read_text()
    assert [q.name for q in p.parent.iterdir() if q.name.endswith(".tmp")] == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign"])
def test_a_damaged_cache_file_is_a_miss_and_is_removed(tmp_path: Path, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    c = FeatureCache(tmp_path)
    p = c.save("x", "h", KEY, feats(50))
    data = p.read_bytes()
    p.write_bytes({"truncate": data[: len(data) // 2], "flip": data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],
                   "empty": b"", "foreign": b"\x80\x04K\x01."}[damage])
    assert c.load("x", "h", KEY) is None
    assert not p.exists()
    assert "re-extracted" in caplog.text


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new" * 1000)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_file_size_limit_gives_an_error_not_a_damaged_file(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (a full disk stand-in): the write fails with EFBIG, the old file is intact."""
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    code = ("import resource, signal, sys, errno\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "from pathlib import Path\nfrom msa.core.io import atomic_write_bytes\n"
            "try:\n    atomic_write_bytes(Path(sys.argv[1]), b'n' * 100000)\n"
            "except OSError as e:\n    sys.exit(3 if e.errno == errno.EFBIG else 4)\n")
    rc = subprocess.run([sys.executable, "-c", code, str(target)], timeout=60).returncode
    assert rc == 3
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_lock_is_exclusive_between_holders_and_removed_on_release(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path)
    first = c.lock(KEY)
    assert first is not None
    assert c.lock(KEY) is None  # same process, second claim: refused (flock is per open file)
    assert str(os.getpid()) in ClipLock.holder(first.path)
    first.release()
    assert not first.path.exists()
    with c.lock(KEY) as again:
        assert again is not None
    assert c.lock("cd" * 32) is not None


def test_waiting_for_a_lock_returns_when_the_holder_releases(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path)
    held = c.lock(KEY)
    assert held is not None
    threading.Timer(0.4, held.release).start()
    t0 = time.monotonic()
    with c.lock(KEY, wait=True) as got:
        assert got is not None
    assert time.monotonic() - t0 >= 0.3


def test_a_killed_holder_releases_its_claim(tmp_path: Path) -> None:
    code = ("import sys, time\nfrom msa.pipeline.extract.cache import FeatureCache\n"
            f"lock = FeatureCache(sys.argv[1]).lock({KEY!r})\nprint('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        c = FeatureCache(tmp_path)
        assert c.lock(KEY) is None
        assert str(proc.pid) in ClipLock.holder(tmp_path / "cache" / "locks" / f"{KEY}.lock")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with c.lock(KEY) as got:  # the stale lock file is still there, but its flock died with the holder
            assert got is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sweep_removes_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path)
    folder = tmp_path / "cache" / "x" / "h"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, timeout=60).stdout.strip()
    stale = folder / f".{KEY}.pkl.{dead}.abc123.tmp"
    live = folder / f".{KEY}.pkl.{os.getpid()}.def456.tmp"
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    stop = tmp_path / "cache" / f".stop-{dead}"  # a Ctrl-C'd run that was then killed
    stop.touch()
    assert c.sweep_temp() == 2
    assert not stale.exists() and not stop.exists() and live.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_sweep_removes_temp_files_of_zombie_writers(tmp_path: Path) -> None:
    """A killed writer nobody has reaped yet (a zombie) counts as dead: its temp file goes."""
    c = FeatureCache(tmp_path)
    folder = tmp_path / "cache" / "x" / "h"
    folder.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        for _ in range(600):  # until it has exited and waits to be reaped (not waited on here)
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.05)
        zombie = folder / f".{KEY}.pkl.{child.pid}.abc123.tmp"
        zombie.write_bytes(b"partial")
        assert c.sweep_temp() == 1 and not zombie.exists()
    finally:
        child.wait()
