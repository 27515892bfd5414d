"""core/heap.py: with keep_heap large blocks are reused from the heap instead of being mapped (and faulted in)
anew per call; trim_heap gives the free part back; the extracting and serving CLIs call keep_heap first."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# in a fresh interpreter: touch a 100 MB block, free it, and count the minor page faults of doing it again,
# from a worker thread (as Whisper's worker allocates)
PROBE = """
import resource, sys, threading
from msa.core.heap import keep_heap
if sys.argv[1] == "tuned":
    keep_heap()
import numpy as np
out = []
def work():
    np.ones(100 << 20, dtype=np.uint8).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(100 << 20, dtype=np.uint8).sum()
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work); t.start(); t.join()
print(out[0])
"""


def _faults(mode: str, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    r = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True, text=True,
                       check=True)
    return int(r.stdout.strip())


# glibc's default maps the block anew and faults every page in again: 25,600 faults of 4 KiB pages, or 50
# where the block gets 2 MiB pages (numpy asks for them)
MAPPED_AGAIN = 40


def test_a_freed_large_block_is_reused_without_page_faults() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    assert default >= MAPPED_AGAIN and tuned <= default // 10, (default, tuned)


def test_a_users_own_malloc_settings_are_left_alone() -> None:
    assert _faults("tuned", MALLOC_ARENA_MAX="4") >= MAPPED_AGAIN
    assert _faults("tuned", GLIBC_TUNABLES="glibc.malloc.check=0") >= MAPPED_AGAIN


@pytest.mark.parametrize("cli", ["extract", "predict", "serve"])
def test_the_extracting_and_serving_clis_call_it_first(cli, monkeypatch) -> None:
    import importlib

    mod = importlib.import_module(f"msa.pipeline.cli.{cli}")
    calls = []
    monkeypatch.setattr(mod, "keep_heap", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        mod.main(["--no-such-option"])
    assert calls == [1]


TRIM = """
from msa.core.heap import keep_heap, trim_heap
keep_heap()
import numpy as np
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
blocks = [np.ones(1 << 20, dtype=np.uint8) for _ in range(200)]  # 200 MiB in the heap, not mapped
del blocks
kept = rss()
print(trim_heap(), kept - rss())
"""


def test_trim_gives_a_kept_heaps_free_memory_back() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    r = subprocess.run([sys.executable, "-c", TRIM], env=clean, capture_output=True, text=True, check=True)
    released, freed_kib = r.stdout.split()
    assert released == "True" and int(freed_kib) > 150 * 1024, r.stdout  # most of the 200 MiB went back
