"""msa-extract on a real dask cluster: a scheduler and a worker started as their own processes on
127.0.0.1, each in another working directory than the client, which passes relative paths. The
worker must find the clips and write into the client's output folder (paths are made absolute
before dispatch); the features equal a sequential run's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import extract_fakes
from extract_fakes import FAKE_RECIPE
from msa.pipeline.cli.extract import main

pytest.importorskip("distributed")
extract_fakes.register()
FAKES_DIR = Path(__file__).resolve().parents[1]  # tests/pipeline: extract_fakes.py (unpickled on the worker)
DASK = Path(sys.executable).parent / "dask"


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKES_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([str(DASK), *args], cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait_for_worker(scheduler_file: Path, timeout: float = 60.0) -> str:
    from dask.distributed import Client

    deadline = time.monotonic() + timeout
    while not scheduler_file.is_file():
        assert time.monotonic() < deadline, "dask scheduler did not start"
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(1, timeout=timeout)
    return address


@pytest.mark.slow
def test_relative_paths_work_on_workers_in_another_directory(tmp_path: Path, make_clip: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if not DASK.is_file():
        pytest.skip(f"dask command-line tool not installed beside {sys.executable}")
    client_dir, sched_dir, worker_dir = (tmp_path / d for d in ("client", "scheduler", "worker"))
    for d in (client_dir / "in", sched_dir, worker_dir):
        d.mkdir(parents=True)
    for name, tone in (("a", 440.0), ("b", 660.0)):
        shutil.copy(make_clip(duration=1.0, fps=10, size=(64, 48), tone_hz=tone), client_dir / "in" / f"{name}.mp4")
    sfile = tmp_path / "scheduler.json"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                     str(sfile)], sched_dir, tmp_path / "scheduler.log")]
    try:
        procs.append(_start(["worker", "--scheduler-file", str(sfile), "--nworkers", "1", "--nthreads", "1",
                             "--no-dashboard", "--local-directory", str(worker_dir)], worker_dir, tmp_path / "worker.log"))
        address = _wait_for_worker(sfile)
        monkeypatch.chdir(client_dir)
        common = ["--extractors", f"{FAKE_RECIPE},asr:fake_asr", "--missing", "empty", "--quiet"]
        assert main(["in", "--out", "seq", *common]) == 0
        assert main(["in", "--out", "dask", *common, "--backend", "dask", "--scheduler", address]) == 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    summary = json.loads((client_dir / "dask" / "summary.json").read_text())

    assert summary["clips"]["extracted"] == 2, (client_dir / "dask" / "errors.jsonl").read_text()
    assert (client_dir / "dask" / "features.pkl").read_bytes() == (client_dir / "seq" / "features.pkl").read_bytes()
    assert not (worker_dir / "dask").exists() and not (worker_dir / "in").exists()
