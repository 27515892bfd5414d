"""msa-serve's job queue with a scripted runner: bounds, cancellation, crashes, and a client that hangs up."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from msa.pipeline.serve.jobs import Job, JobQueue, QueueFull

WAIT_S = 30


class Gate:
    """A runner that reports a stage, then waits until the test opens the gate (stage by stage)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.ran: list[str] = []

    def __call__(self, job: Job, on_stage) -> dict:
        on_stage("hash")
        self.started.set()
        self.ran.append(job.name)
        assert self.go.wait(WAIT_S)
        on_stage("model")  # a cancelled job stops here
        return {"clip": job.name}


def job(name: str, tmp_path: Path | None = None) -> Job:
    workdir = None
    if tmp_path is not None:
        workdir = tmp_path / name
        workdir.mkdir()
        (workdir / "clip.mp4").write_bytes(b"x")
    return Job(clip=Path(name), name=name, bundle="b", workdir=workdir)


def test_bounded_queue_refuses_rather_than_grows(tmp_path):
    gate = Gate()
    q = JobQueue(gate, workers=1, max_queued=1)
    try:
        first = q.submit(job("first"))
        assert gate.started.wait(WAIT_S)  # the worker holds it: the queue is empty again
        q.submit(job("second"))
        refused = job("third", tmp_path)
        with pytest.raises(QueueFull, match="1 worker"):
            q.submit(refused)
        assert not refused.workdir.exists() and q.get(refused.id) is None
        gate.go.set()
        assert first.finished.wait(WAIT_S) and first.status == "done" and first.result == {"clip": "first"}
    finally:
        gate.go.set()
        q.close()


def test_cancel_a_queued_and_a_running_job(tmp_path):
    gate = Gate()
    q = JobQueue(gate, workers=1)
    try:
        running, queued = q.submit(job("running", tmp_path)), q.submit(job("queued", tmp_path))
        assert gate.started.wait(WAIT_S)
        q.cancel(queued)
        q.cancel(running)
        gate.go.set()
        for j in (running, queued):
            assert j.finished.wait(WAIT_S)
            assert j.status == "cancelled" and j.error["reason"] == "cancelled" and not j.workdir.exists()
        assert gate.ran == ["running"]  # the queued one never started
        assert running.stages == ["hash"]  # stopped at the next stage
    finally:
        q.close()


def test_a_job_nobody_asks_about_is_abandoned():
    gate = Gate()
    q = JobQueue(gate, workers=1, abandon_s=0.0)
    try:
        j = q.submit(job("orphan"))
        gate.go.set()
        assert j.finished.wait(WAIT_S) and j.status == "cancelled"
    finally:
        q.close()


def test_a_crash_fails_its_job_and_the_worker_carries_on(tmp_path):
    def runner(j: Job, on_stage) -> dict:
        if j.name == "bad":
            raise ZeroDivisionError("division by zero")
        return {"clip": j.name}

    q = JobQueue(runner, workers=1)
    try:
        bad, good = q.submit(job("bad", tmp_path)), q.submit(job("good", tmp_path))
        assert bad.finished.wait(WAIT_S) and good.finished.wait(WAIT_S)
        assert bad.status == "failed" and bad.error["reason"] == "internal"
        assert "ZeroDivisionError" in bad.error["error"] and not bad.workdir.exists()
        assert good.status == "done" and q.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 1,
                                                         "cancelled": 0}
    finally:
        q.close()


def test_on_idle_runs_once_the_queue_has_been_idle_for_a_while():
    """Two workers, three jobs held at a gate: nothing idles while one runs or waits; once all are done and
    none came for idle_s, on_idle runs once (msa-serve: trim the heap), and again only after more work."""
    gate, idles = Gate(), []
    q = JobQueue(gate, workers=2, on_idle=lambda: idles.append(len(gate.ran)), idle_s=0.1)
    try:
        jobs = [q.submit(job(f"c{i}")) for i in range(3)]
        assert gate.started.wait(WAIT_S)
        time.sleep(0.4)  # workers wait past idle_s while jobs run and wait: no call
        assert idles == []
        gate.go.set()
        assert all(j.finished.wait(WAIT_S) for j in jobs)
        time.sleep(0.6)
        assert idles == [3]  # once, however many idle timeouts passed
        assert q.submit(job("c3")).finished.wait(WAIT_S)
        time.sleep(0.6)
        assert idles == [3, 4]
    finally:
        q.close()


def test_finished_jobs_are_forgotten_after_keep_s():
    forgotten: list[str] = []
    q = JobQueue(lambda j, s: {}, workers=1, keep_s=0.0, on_forget=lambda j: forgotten.append(j.name))
    try:
        old = q.submit(job("old"))
        assert old.finished.wait(WAIT_S)
        q.submit(job("new"))
        assert q.get(old.id) is None and forgotten == ["old"]
    finally:
        q.close()


def test_a_client_that_disconnects_cancels_its_job(tmp_path, av_clip):
    """Drive the ASGI app by hand: send the upload, then hang up while the job runs."""
    pytest.importorskip("starlette", reason="msa-serve needs the 'serve' extra")
    from msa.pipeline.serve.service import ServeConfig, create_app

    import extract_fakes
    from test_predict import save_lmf_bundle

    extract_fakes.register()
    bundle = save_lmf_bundle(tmp_path / "lmf", tmp_path / "log")
    app = create_app(ServeConfig(bundles=(bundle,), signals=(), asr="fake_asr", affect=False))
    svc = app.state.service
    gate = Gate()
    svc.jobs.runner = gate
    body = (b"--b\r\ncontent-disposition: form-data; name=\"file\"; filename=\"talk.mp4\"\r\n\r\n"
            + av_clip.read_bytes() + b"\r\n--b--\r\n")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"multipart/form-data; boundary=b"),
                         (b"content-length", str(len(body)).encode())], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "app": app}
    sent: list[dict] = []

    async def scenario() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            if gate.started.is_set():  # the job runs: now the client hangs up (as uvicorn reports it)
                return {"type": "http.disconnect"}
            await asyncio.sleep(WAIT_S)  # nothing to receive yet (the app's poll cancels this wait)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), WAIT_S)

    try:
        asyncio.run(scenario())
        gate.go.set()
        (j,) = svc.jobs._jobs.values()
        assert j.finished.wait(WAIT_S)
        assert j.status == "cancelled" and j.name == "talk.mp4" and j.stages == ["hash"]
        assert sent[0]["status"] == 499 and list(svc.uploads.iterdir()) == []
    finally:
        gate.go.set()
        svc.close()
