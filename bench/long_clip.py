"""Peak memory and time of msa-extract on one long generated clip (default: 30 minutes).

The clip is ffmpeg's lavfi ``testsrc2`` (small, moving pattern, no face) with a 440 Hz tone, H.264 +
AAC. A sidecar transcript keeps speech recognition out of it, so the default recipe runs MiniLM,
eGeMAPS and FaceMesh AUs (10 fps, frames streamed). The same is done on a short clip of the same
kind; peak RSS must not follow the duration (frames are streamed; the 16 kHz waveform, 64 KiB per
second, is the one thing held whole). A third figure isolates the media layer: streaming every frame
at native size and rate.

    python bench/long_clip.py [--minutes 30] [--short-minutes 1] [--size 160x120] [--fps 25]
                              [--keep DIR] [-- more msa-extract arguments]

Peak RSS is that of the process and its children (ffmpeg), from ``os.wait4``.
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

STREAM = """
import sys
from msa.pipeline.extract.media import iter_frames, probe
info = probe(sys.argv[1])
print(sum(len(b) for b in iter_frames(sys.argv[1], info=info)))
"""


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def generate(path: Path, seconds: float, size: str, fps: int) -> float:
    """Write the clip and its sidecar transcript; returns seconds spent."""
    t0 = time.perf_counter()
    cmd = [ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1",
           "-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True, timeout=max(600.0, seconds), capture_output=True)
    path.with_suffix(".txt").write_text("a generated test clip with a steady tone and a moving pattern\n")
    return time.perf_counter() - t0


def measure(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Wall, CPU and peak RSS (MiB) of one child process and its children."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd[:4])} ...\n{stderr[-3000:]}")
    if wall > timeout:
        print(f"warning: took {wall:.0f} s, over the {timeout:.0f} s budget", file=sys.stderr)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "stdout": stdout}


def extract(clip: Path, out: Path, extra: list[str], timeout: float) -> dict[str, Any]:
    r = measure([sys.executable, "-m", "msa.pipeline.cli.extract", str(clip), "--out", str(out), "--quiet", *extra],
                timeout)
    r["summary"] = json.loads((out / "summary.json").read_text())
    return r


def row(name: str, minutes: float, r: dict[str, Any]) -> str:
    media = minutes * 60
    return (f"| {name} | {minutes:g} min | {r['wall']:.1f} | {r['wall'] / media:.3f} | {r['cpu']:.1f} | "
            f"{r['rss_mib']:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--short-minutes", type=float, default=1.0, help="baseline clip (0: skip)")
    p.add_argument("--size", default="160x120", help="WxH of the generated video")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--keep", type=Path, default=None, help="keep clips and outputs here instead of a temp folder")
    p.add_argument("extra", nargs="*", help="more msa-extract arguments (after --), e.g. --recipe mosi")
    args = p.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="msa-longclip-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# msa-extract on a long generated clip ({args.size}, {args.fps} fps, tone, sidecar transcript)")
    print(f"machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}; "
          f"python {sys.version.split()[0]}; extra arguments: {' '.join(args.extra) or 'none (default recipe)'}")
    rows = ["| run | media | wall s | RTF | CPU s | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|"]
    results = {}
    for name, minutes in (("short", args.short_minutes), ("long", args.minutes)):
        if minutes <= 0:
            continue
        clip = work / f"{name}_{minutes:g}min.mp4"
        if not clip.exists():
            print(f"generating {clip.name}: {generate(clip, minutes * 60, args.size, args.fps):.0f} s", flush=True)
        budget = minutes * 60 * 5
        stream = measure([sys.executable, "-c", STREAM, str(clip)], budget)
        rows.append(row(f"{name}: media layer, every frame at native size", minutes, stream))
        shutil.rmtree(work / f"out_{name}", ignore_errors=True)
        res = extract(clip, work / f"out_{name}", args.extra, budget)
        results[name] = res
        rows.append(row(f"{name}: msa-extract", minutes, res))
        stages = ", ".join(f"{k} {v:.1f}" for k, v in res["summary"]["stage_seconds"].items())
        print(f"{name}: stage seconds: {stages}", flush=True)
    print("\n".join(rows))
    if "short" in results and "long" in results:
        s, lg = results["short"]["rss_mib"], results["long"]["rss_mib"]
        audio_mib = (args.minutes - args.short_minutes) * 60 * 16000 * 4 / 2**20
        print(f"peak RSS long - short: {lg - s:+.0f} MiB for {args.minutes / args.short_minutes:.0f}x the duration "
              f"(the extra 16 kHz float32 waveform alone is {audio_mib:.0f} MiB)")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
