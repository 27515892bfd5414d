"""glibc's malloc, tuned for msa's processes: one arena that keeps large blocks, and a trim when idle."""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


def _libc() -> Any | None:
    """glibc, or None (another C library, another platform)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist in glibc only
    except (OSError, AttributeError):  # musl and other C libraries
        return None
    return libc


def keep_heap() -> None:
    """glibc: one malloc arena, blocks up to 256 MiB served from the heap, and the heap trimmed only when
    1 GiB at its top is free. Whisper (CTranslate2) allocates its activations per call from its worker
    threads (base's attention scores over a 30 s window alone are 8 x 1500 x 1500 floats, 72 MB): glibc's
    default serves such blocks from fresh mappings (per-thread arenas are capped at 64 MiB, larger blocks
    are mapped) and unmaps them on free, so every call faults their pages in again. On the 12 clips of
    bench/extract.py that was 1.2 million page faults and 4.3 of 21 CPU-s in the kernel; with these settings
    0.18 million and 1.37-1.47 s, at the same peak RSS (msa-predict's rose 60-90 MiB; docs/benchmarks.md).
    Left alone where the user configured malloc (any MALLOC_* variable or GLIBC_TUNABLES) and outside
    glibc. Call before the heavy imports: arenas that exist already keep their own heaps."""
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return
    libc = _libc()
    if libc is None:
        return
    for param, value in ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 256 << 20), (M_TRIM_THRESHOLD, 1 << 30)):
        libc.mallopt(param, value)


def trim_heap() -> bool:
    """Give the heap's free memory back to the system (glibc ``malloc_trim(0)``); True when some was given
    back (always False outside glibc). A long-running process (msa-serve) calls it when it goes idle, so
    the heap :func:`keep_heap` keeps does not stay at its high-water mark between requests."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))
