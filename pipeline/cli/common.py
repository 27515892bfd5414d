"""What every CLI shares: error -> one-line message + exit code, never a traceback for user errors."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from msa.core.errors import MsaError

Main = Callable[[argparse.Namespace], int]

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


def keep_heap() -> None:
    """glibc: one malloc arena, blocks up to 256 MiB served from the heap, and the heap trimmed only when
    1 GiB at its top is free. Whisper (CTranslate2) allocates its activations per call from its worker
    threads (base's attention scores over a 30 s window alone are 8 x 1500 x 1500 floats, 72 MB): glibc's
    default serves such blocks from fresh mappings (per-thread arenas are capped at 64 MiB, larger blocks
    are mapped) and unmaps them on free, so every call faults their pages in again. On the 12 clips of
    bench/extract.py that was 1.2 million page faults and 4.3 of 21 CPU-s in the kernel; with these settings
    0.18 million and 1.4 s, at the same peak RSS (msa-predict's rose 60-90 MiB; docs/benchmarks.md).
    Left alone where the user configured malloc (any MALLOC_* variable or GLIBC_TUNABLES) and outside
    glibc. Call before the heavy imports: arenas that exist already keep their own heaps."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ \
            or any(k.startswith("MALLOC_") for k in os.environ):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return
    for param, value in ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 256 << 20), (M_TRIM_THRESHOLD, 1 << 30)):
        mallopt(param, value)


def check_segments(seconds: float) -> float:
    """``--segments`` of msa-predict and msa-serve: 0 (off) or a positive number of seconds (not NaN)."""
    from msa.core.errors import UsageError

    if not seconds >= 0:
        raise UsageError(f"--segments: expected a positive number of seconds (0: off), got {seconds:g}")
    return seconds


def run(prog: str, parser: argparse.ArgumentParser, main: Main, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run ``main``; map typed errors and Ctrl-C to one line and an exit code."""
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep CLI output to our own lines
    try:
        return int(main(args) or 0)
    except MsaError as e:
        print(f"{prog}: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permission denied, ... : a clear line, not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
