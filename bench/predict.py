"""Benchmark msa-predict: cold start (imports + model loads) and a second clip in the same call.

Builds two ~10 s example clips (synthesised speech played twice over a still face photo; the second
at another frame rate so it is a different file, not a cache hit) and runs

    msa-predict A.mp4 B.mp4 --json [--bundle DIR]

in a fresh process. Prints the process wall and CPU seconds (user + sys, from ``os.wait4``), peak
RSS, ``msa-predict --help`` wall time, and msa-predict's own per-stage seconds for each clip.

    python bench/predict.py [--bundle checkpoints/default] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from msa.pipeline.serve.demo import make_example_clip


def run(cmd: list[str], env: dict[str, str]) -> dict:
    """Wall, time to the first result line, CPU (user + sys of the process and its children) and peak RSS."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        lines, first = [], None
        for line in proc.stdout:  # type: ignore[union-attr]
            first = first if first is not None else time.perf_counter() - t0
            lines.append(line)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd[:4])} failed:\n{err.read().decode()[-3000:]}")
    return {"wall": wall, "first": first or wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mib": usage.ru_maxrss / 1024, "stdout": "".join(lines)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the run (default: unset)")
    args = p.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="msa-bench-predict-") as tmp:
        a = make_example_clip(Path(tmp) / "a.mp4", repeat=2)
        b = make_example_clip(Path(tmp) / "b.mp4", repeat=2, fps=12)
        cli = [sys.executable, "-m", "msa.pipeline.cli.predict"]
        bundle = ["--bundle", args.bundle] if args.bundle else []
        helped = run([*cli, "--help"], env)
        one = run([*cli, str(a), "--json", *bundle], env)
        r = run([*cli, str(a), str(b), "--json", *bundle], env)
    results = [json.loads(line) for line in r["stdout"].splitlines() if line.startswith("{")]
    print(f"machine: os.cpu_count() {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"msa-predict --help: wall {helped['wall']:.2f} s, CPU {helped['cpu']:.2f} s")
    print(f"msa-predict A (cold process, one 10 s clip): wall {one['wall']:.1f} s (result printed at "
          f"{one['first']:.1f} s), CPU {one['cpu']:.1f} s, "
          f"peak RSS {one['rss_mib']:.0f} MiB")
    print(f"msa-predict A B (cold process, two clips): wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, "
          f"peak RSS {r['rss_mib']:.0f} MiB")
    print(f"second clip: CPU {r['cpu'] - one['cpu']:.1f} s (difference of the two runs), "
          f"wall {results[1]['timings']['total']:.1f} s (its own 'total')")
    stages = sorted({k for res in results for k in res["timings"]}, key=lambda k: (k == "total", k))
    print("\n| stage | clip A (first, cold) | clip B (second) |\n|---|---:|---:|")
    for k in stages:
        print(f"| {k} | " + " | ".join(f"{res['timings'].get(k, 0.0):.2f}" for res in results) + " |")
    for res in results:
        print(f"{Path(res['clip']).name}: {res['label']} {res['score']:+.2f}, speech {res['speech_seconds']} s, "
              f"face {res['face_ratio']}")


if __name__ == "__main__":
    main()
