"""Run many clips through ``stages.run_clip``: in this process, on warm forked workers, on joblib/loky
workers, or on dask.

``fork`` (the default where the platform has it) imports the extractors' backends and loads their
fork-safe parts here, once, then forks the workers: none of them imports mediapipe or loads MiniLM
again (loky's workers start from a fresh interpreter and pay it each). Models that own threads
(MediaPipe's graph, Whisper) still load in each worker, on first use.

Clips claimed by another msa-extract on the same output folder are retried at the end (waiting for
the claim), so two processes never extract the same clip. The first Ctrl-C lets the clips in flight
finish and skips the rest; a second one stops at once (the cache stays consistent either way).
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from msa.pipeline.extract.stages import STAGES, ExtractorRef, Plan, Record, StorageError, preload, run_clip
from msa.pipeline.extract.sources import Item

# the runner's public API (the per-clip part lives in stages.py)
__all__ = ["BACKENDS", "DEFAULT_BACKEND", "STAGES", "ExtractorRef", "Plan", "Record", "StorageError", "run_all",
           "run_clip"]

log = logging.getLogger("msa.runner")
BACKENDS = ("fork", "loky", "dask")
# fork only where it is the platform's own default (Linux): macOS system libraries are not fork-safe
DEFAULT_BACKEND = "fork" if sys.platform.startswith("linux") else "loky"


def run_all(
    items: list[Item],
    plan: Plan,
    *,
    jobs: int = 1,
    backend: str = DEFAULT_BACKEND,
    scheduler: str | None = None,
    on_record: Callable[[Record], None] = lambda r: None,
) -> tuple[list[Record], bool]:
    """Run every clip; returns (records, interrupted). The first Ctrl-C lets clips in flight finish."""
    records: list[Record] = []
    busy: list[Record] = []
    tasks = list(enumerate(items))
    with _graceful_stop(plan.stop_file) as stop:
        if jobs > 1 or backend == "dask":  # cached clips are settled here: no worker pool for a cached rerun
            pending = []
            for i, item in tasks:
                rec = run_clip(i, item, plan, cached_only=True)
                if rec.status == "todo":
                    pending.append((rec.duration, i, item))
                elif rec.status != "skipped":
                    records.append(rec)
                    on_record(rec)
            # longest clips first (their probed durations): a long clip started last would leave the other
            # workers idle at the end; records are put back in input order below
            tasks = [(i, item) for _, i, item in sorted(pending, key=lambda p: (-p[0], p[1]))]
        for rec in _execute(tasks, plan, jobs, backend, scheduler) if tasks else ():
            if rec.status == "busy":
                busy.append(rec)
                continue
            records.append(rec)
            on_record(rec)
        for rec in busy:  # held by another process: wait for it, then it is (usually) a cache hit
            if stop.is_set():
                break
            log.info("waiting for %s (claimed by another msa-extract)", rec.item.id)
            rec = run_clip(rec.index, rec.item, plan, wait=True)
            records.append(rec)
            on_record(rec)
    interrupted = stop.is_set() or any(r.status == "skipped" for r in records)
    records.sort(key=lambda r: r.index)
    return [r for r in records if r.status != "skipped"], interrupted


def _execute(tasks: list[tuple[int, Item]], plan: Plan, jobs: int, backend: str,
             scheduler: str | None) -> Iterator[Record]:
    if backend in ("fork", "loky") and jobs <= 1:
        for i, item in tasks:
            if plan.stop_file and os.path.exists(plan.stop_file):
                return
            yield run_clip(i, item, plan)
        return
    if backend == "fork":
        yield from _execute_forked(tasks, plan, jobs)
        return
    if backend == "loky":
        from joblib import Parallel, delayed

        calls = (delayed(run_clip)(i, item, plan) for i, item in tasks)
        yield from Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(calls)
        return
    if backend != "dask":
        raise ValueError(f"unknown backend {backend!r}")
    yield from _execute_dask(tasks, plan, jobs, scheduler)


def _execute_forked(tasks: list[tuple[int, Item]], plan: Plan, jobs: int) -> Iterator[Record]:
    """One task per clip on ``jobs`` processes forked from this one after ``preload``. The pool starts no
    thread before its workers exist (the executor forks them all on the first submit)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    preload(plan)
    pool = ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("fork"),
                               initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))  # Ctrl-C: main decides
    try:
        futures = [pool.submit(run_clip, i, item, plan) for i, item in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _execute_dask(tasks: list[tuple[int, Item]], plan: Plan, jobs: int, scheduler: str | None) -> Iterator[Record]:
    """One dask future per clip, on the cluster's workers (joblib's dask backend would run the clips in
    this process when the cluster has a single worker thread)."""
    from dask.distributed import Client, LocalCluster, as_completed

    originals = dict(tasks)
    cluster = None if scheduler else LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    client = Client(scheduler or cluster)
    try:
        futures = [client.submit(run_clip, i, item, p, pure=False)
                   for i, item, p in _absolute(tasks, plan)]
        for future in as_completed(futures):
            rec = future.result()
            rec.item = originals[rec.index]  # report the paths as the user gave them
            yield rec
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _absolute(tasks: list[tuple[int, Item]], plan: Plan) -> Iterator[tuple[int, Item, Plan]]:
    """Tasks with absolute input and output paths: a dask worker resolves paths in its own working
    directory (often on another machine with a shared file system), not in the client's."""
    plan = dataclasses.replace(plan, out_dir=os.path.abspath(plan.out_dir),
                               stop_file=os.path.abspath(plan.stop_file) if plan.stop_file else "")
    for i, item in tasks:
        yield i, dataclasses.replace(item, path=Path(os.path.abspath(item.path))), plan


@contextmanager
def _graceful_stop(stop_file: str) -> Iterator[threading.Event]:
    """First Ctrl-C: create ``stop_file`` (tasks not yet started skip themselves) and finish clips in
    flight. Second Ctrl-C: KeyboardInterrupt now (the atomic cache writes keep the cache consistent)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if stop_file:
            Path(stop_file).parent.mkdir(parents=True, exist_ok=True)
            Path(stop_file).touch()
        print("msa-extract: stopping after the clip(s) in flight; press Ctrl-C again to stop now",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
        if stop_file:
            Path(stop_file).unlink(missing_ok=True)
