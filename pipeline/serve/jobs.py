"""msa-serve's jobs: a bounded queue in front of a fixed number of worker threads.

A job is one clip to score. Workers take jobs in order; the queue holds at most ``max_queued``
waiting jobs (a full queue refuses new ones rather than growing without bound). A job is cancelled
when its client goes away: before it starts it is skipped, while it runs it stops at the next stage
(:class:`Cancelled` raised from the progress callback). Any exception in a job fails that job only,
never a worker, so one bad prediction cannot take the service down.
"""
from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from msa.core.errors import MsaError
from msa.pipeline.extract.stages import STAGES

log = logging.getLogger("msa.serve")

# every stage a job reports, in order: the extraction stages, then the model and the plot
JOB_STAGES = (*STAGES, "model", "plot")
DONE = ("done", "failed", "cancelled")


class Cancelled(MsaError):
    """The client went away (disconnected, or stopped polling): the job stops at the next stage."""

    reason = "cancelled"


class QueueFull(MsaError):
    """Every worker is busy and the queue is full: try again later."""

    reason = "busy"


@dataclass
class Job:
    """One clip to score: where it is, what to run it with, and how far it got."""

    clip: Path  # the file to score (an upload in ``workdir``, or a path under the allowed root)
    name: str  # what the client calls it (the uploaded file name, or the path it gave)
    bundle: str
    plot: bool = True
    transcript: Path | None = None  # a transcript file to use instead of speech recognition
    segments: float | None = None  # --segments seconds for this clip (0: whole clip); None: the service's
    workdir: Path | None = None  # private folder of an upload: removed when the job ends
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "queued"  # queued | running | done | failed | cancelled
    stage: str = ""
    stages: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    created: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.monotonic)  # last time a client asked about it
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def progress(self) -> float:
        """Share of the stages done, never going back (a stage skipped by a cache hit counts as done
        once a later one starts; the transcript is looked up in the cache before the audio decodes)."""
        if self.status == "done":
            return 1.0
        done = [JOB_STAGES.index(s) for s in self.stages if s in JOB_STAGES]
        return round(max(done, default=0) / len(JOB_STAGES), 3)

    def view(self) -> dict[str, Any]:
        """What ``GET /v1/jobs/{id}`` returns."""
        out: dict[str, Any] = {"id": self.id, "status": self.status, "clip": self.name, "bundle": self.bundle,
                               "stage": self.stage, "stages": list(self.stages), "progress": self.progress()}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


Runner = Callable[[Job, Callable[[str], None]], dict[str, Any]]


class JobQueue:
    """``workers`` threads running ``runner(job, on_stage)``; finished jobs are kept ``keep_s`` seconds.

    ``abandon_s``: a job nobody asked about for that long is cancelled (a page closed mid-job).
    ``on_idle``: called once no job has run or waited for ``idle_s`` seconds after some work (msa-serve
    trims the heap then; not after every job, which would give back memory the next job takes again)."""

    def __init__(self, runner: Runner, *, workers: int = 1, max_queued: int = 32, keep_s: float = 3600.0,
                 abandon_s: float = 120.0, on_forget: Callable[[Job], None] = lambda job: None,
                 on_idle: Callable[[], Any] = lambda: None, idle_s: float = 2.0) -> None:
        self.runner, self.keep_s, self.abandon_s, self.on_forget = runner, keep_s, abandon_s, on_forget
        self.on_idle, self.idle_s = on_idle, idle_s
        self.workers = workers
        self._pending = 0  # jobs submitted and not yet finished (waiting or running)
        self._worked = False  # a job finished since the last on_idle
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queued)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"msa-serve-worker-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    # --- clients -------------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """Queue ``job``; QueueFull when the queue is at its bound (the job's upload is removed)."""
        self._forget_old()
        with self._lock:
            self._jobs[job.id] = job
            self._pending += 1
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._jobs.pop(job.id, None)
                self._pending -= 1
            _remove(job)
            raise QueueFull(f"all {self.workers} worker(s) are busy and {self._queue.maxsize} clip(s) are waiting; "
                            "try again later") from None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            job.seen = time.monotonic()
        return job

    def cancel(self, job: Job) -> None:
        """Ask ``job`` to stop: skipped if still queued, stopped at its next stage if running."""
        job.cancel_requested.set()

    def counts(self) -> dict[str, int]:
        with self._lock:
            jobs = list(self._jobs.values())
        return {s: sum(j.status == s for j in jobs) for s in ("queued", "running", "done", "failed", "cancelled")}

    def close(self) -> None:
        """Cancel what is left and stop the workers (after their current stage)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_requested.set()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)
        for job in jobs:
            _remove(job)
            self.on_forget(job)

    # --- workers -------------------------------------------------------------------------------
    def _check(self, job: Job) -> None:
        if not job.cancel_requested.is_set() and time.monotonic() - job.seen > self.abandon_s:
            log.info("job %s: no client asked about it for %.0f s; cancelling", job.id, self.abandon_s)
            job.cancel_requested.set()
        if job.cancel_requested.is_set():
            raise Cancelled(f"{job.name}: cancelled (the client went away)")

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    idle = self._worked and self._pending == 0
                    if idle:
                        self._worked = False
                if idle:
                    self.on_idle()
                continue
            if job is None:
                return
            self._run(job)
            with self._lock:
                self._pending -= 1
                self._worked = True

    def _run(self, job: Job) -> None:
        def on_stage(stage: str) -> None:
            self._check(job)
            job.stage = stage
            if stage not in job.stages:
                job.stages.append(stage)

        try:
            self._check(job)
            job.status = "running"
            job.result, job.status = self.runner(job, on_stage), "done"
        except MsaError as e:  # messages name the clip as the client did, never the private upload path
            job.status = "cancelled" if e.reason == "cancelled" else "failed"
            job.error = {"error": e.one_line().replace(str(job.clip), job.name), "reason": e.reason}
        except Exception as e:  # noqa: BLE001 - a crash in one prediction fails that job, not the service
            log.exception("job %s crashed", job.id)
            job.status = "failed"
            job.error = {"error": f"{job.name}: prediction crashed ({type(e).__name__}: {' '.join(str(e).split())[:300]})",
                         "reason": "internal"}
        finally:
            _remove(job)
            job.finished.set()

    def _forget_old(self) -> None:
        """Drop finished jobs older than ``keep_s`` (their plots go with them)."""
        now = time.time()
        with self._lock:
            old = [j for j in self._jobs.values() if j.status in DONE and now - j.created > self.keep_s]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            self.on_forget(job)


def _remove(job: Job) -> None:
    """Delete the job's private upload folder (the clip is never kept after its result)."""
    if job.workdir is not None:
        shutil.rmtree(job.workdir, ignore_errors=True)
