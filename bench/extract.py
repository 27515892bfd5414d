"""Benchmark msa-extract (default recipe) on the real clips in ../shared/data/video.

Prints, per run: wall and CPU seconds, media seconds, real-time factor (wall / media), CPU seconds
per media second, peak RSS, and seconds per stage (per media second). Runs:

  cold     fresh output folder (models load, everything extracted)
  warm     the same command again (everything cached)
  subset   cold on the first N clips only: peak memory must not grow with the clip count

    python bench/extract.py [--data ../shared/data/video] [--jobs 1] [--subset 3] [--keep DIR]

Each run is a separate ``msa-extract`` process; its peak RSS is the largest of that process and
its children (loky workers, ffmpeg), from ``os.wait4``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MEDIA_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".wav", ".flac", ".mp3", ".aiff"}


def run(inp: Path, out: Path, jobs: int, extra: list[str]) -> dict[str, Any]:
    """One msa-extract process: wall, CPU, peak RSS (MiB) and its summary.json."""
    cmd = [sys.executable, "-m", "msa.pipeline.cli.extract", str(inp), "--out", str(out), "--quiet",
           "--jobs", str(jobs), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"msa-extract failed:\n{stderr.decode()[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "summary": summary, "stdout": stdout.decode()}


def report(name: str, r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    media = s["media_seconds"]
    c = s["clips"]
    lines = [f"### {name}",
             f"clips {c['ok']} ok ({c['extracted']} extracted, {c['cached']} cached), {c['failed']} failed; "
             f"media {media:.1f} s",
             f"wall {r['wall']:.1f} s (RTF {r['wall'] / media:.3f}); CPU {r['cpu']:.1f} s "
             f"({r['cpu'] / media:.3f} CPU-s per media-s); peak RSS {r['rss_mib']:.0f} MiB",
             "", "| stage | seconds | s per media s |", "|---|---:|---:|"]
    for stage, sec in [*s["stage_seconds"].items(), ("assemble", s["assemble_seconds"])]:
        lines.append(f"| {stage} | {sec:.2f} | {sec / media:.4f} |")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "video")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--subset", type=int, default=3, help="clips in the memory-scaling run (0: skip)")
    p.add_argument("--keep", type=Path, default=None, help="keep outputs here instead of a temp folder")
    p.add_argument("extra", nargs="*", help="more msa-extract arguments (after --)")
    args = p.parse_args()
    if not args.data.is_dir():
        sys.exit(f"no data folder at {args.data} (see ../shared/data/SOURCES.md)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="msa-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"# msa-extract benchmark: {args.data} (default recipe, --jobs {args.jobs})")
    print(f"machine: {os.cpu_count()} CPUs, load average at start {load[0]:.1f}; python {sys.version.split()[0]}")
    print()
    cold = run(args.data, work / "full", args.jobs, args.extra)
    warm = run(args.data, work / "full", args.jobs, args.extra)
    lines = report("cold cache", cold) + report("warm cache (everything cached)", warm)
    lines.append(f"warm / cold wall: {warm['wall'] / cold['wall']:.2%}")
    if args.subset:
        clips = sorted(p for p in args.data.iterdir() if p.suffix.lower() in MEDIA_EXTS)[: args.subset]
        sub = work / "subset_in"
        sub.mkdir(exist_ok=True)
        for c in clips:
            if not (sub / c.name).exists():
                os.symlink(c, sub / c.name)
        small = run(sub, work / "subset", args.jobs, args.extra)
        n_full = cold["summary"]["clips"]["ok"] + cold["summary"]["clips"]["failed"]
        lines += report(f"cold cache, first {len(clips)} clips only", small)
        lines.append(f"peak RSS: {len(clips)} clips {small['rss_mib']:.0f} MiB, {n_full} clips "
                     f"{cold['rss_mib']:.0f} MiB (ratio {cold['rss_mib'] / small['rss_mib']:.2f})")
    print("\n".join(lines))
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
