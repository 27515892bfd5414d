"""msa-serve's ASGI app (Starlette): the msa-predict Predictor behind a small JSON API and one page.

Routes (see README "Web service"): ``GET /`` (the page), ``GET /v1/health``, ``GET /v1/bundles``,
``POST /v1/predict`` (multipart upload, or JSON ``{"path": ...}`` under ``--allow-root``),
``GET|DELETE /v1/jobs/{id}``, ``GET /v1/jobs/{id}/plot.png``. A result is the object
``msa-predict --json`` prints (:func:`msa.pipeline.serve.predict.predict_json`), with ``clip`` the
name the client gave and ``plot`` a URL. Every error is JSON ``{"error": one line, "reason": code}``
with a 4xx status for bad input.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from msa.core.errors import MissingBackendError, MsaError
from msa.core.heap import trim_heap
from msa.pipeline.extract.sources import subtitle_suffix
from msa.pipeline.serve.jobs import JOB_STAGES, Job, JobQueue
from msa.pipeline.serve.predict import PredictOptions, Predictor, predict_json
from msa.pipeline.serve.segments import check_seconds
from msa.pipeline.serve.uploads import RequestError, path_under, receive_upload

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - depends on the install
    raise MissingBackendError(f"msa-serve needs the 'serve' extra ({e.name} is missing): pip install 'msa[serve]'") from e

log = logging.getLogger("msa.serve")
STATIC = Path(__file__).resolve().parent / "static"
POLL_S = 0.05  # how often a waiting request checks its job and its client
# reason code -> HTTP status; anything else is a 500 (a bundle or extractor problem, not the input)
STATUS = {"bad_request": 400, "usage": 400, "permission_denied": 403, "outside_root": 403, "not_found": 404,
          "too_large": 413, "not_media": 415, "corrupt_media": 415, "no_speech": 422, "no_audio": 422, "no_video": 422,
          "no_text": 422, "too_short": 422, "too_long": 422, "timeout": 422, "no_word_timings": 422,
          "cancelled": 499, "busy": 503}
CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'"


@dataclass(frozen=True)
class ServeConfig:
    """What msa-serve was started with; ``bundles`` in order, the first is the default."""

    bundles: tuple[Path, ...]
    workers: int = 1
    max_upload_mb: float = 500.0
    allow_root: Path | None = None
    long_seconds: float = 60.0  # clips longer than this (media seconds) are answered 202 + a job at once
    max_queued: int = 32
    signals: tuple[tuple[str, str], ...] | None = None  # None: msa-predict's default
    asr: str = "whisper"
    device: str = "auto"
    affect: bool = True  # voice/face readouts beside the score (msa-predict's default)
    segments: float = 0.0  # > 0: msa-predict --segments for every bundle but PHQ-8 ones
    allowed_hosts: tuple[str, ...] | None = None  # Host headers accepted (DNS-rebinding guard); None: any


def bundle_names(paths: tuple[Path, ...]) -> list[str]:
    """One unique name per bundle: its folder name (``default``), ``-2``, ``-3`` ... for repeats."""
    names: list[str] = []
    for p in paths:
        base = Path(p).resolve().name or "bundle"
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}-{i}"
        names.append(name)
    return names


class Service:
    """The loaded bundles, the job queue and the private folder for uploads and plots."""

    def __init__(self, config: ServeConfig) -> None:
        from msa.pipeline.train.bundle import read_meta

        self.config = config
        self.root = Path(tempfile.mkdtemp(prefix="msa-serve-"))  # mode 0700: private to this user
        self.uploads, self.plots = self.root / "uploads", self.root / "plots"
        self.uploads.mkdir()
        self.plots.mkdir()
        self.predictors: dict[str, Predictor] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        try:
            for name, path in zip(bundle_names(config.bundles), config.bundles, strict=True):
                extra = {} if config.signals is None else {"signals": config.signals}
                self.predictors[name] = Predictor(PredictOptions(bundle=Path(path), asr=config.asr,
                                                                 device=config.device, affect=config.affect, **extra))
                self.meta[name] = read_meta(Path(path))
        except BaseException:
            self.close()
            raise
        self.default = next(iter(self.predictors))
        self.jobs = JobQueue(self._run, workers=config.workers, max_queued=config.max_queued,
                             on_forget=lambda job: (self.plots / f"{job.id}.png").unlink(missing_ok=True),
                             on_idle=trim_heap)  # no request waiting: the heap's free memory goes back

    def close(self) -> None:
        if hasattr(self, "jobs"):
            self.jobs.close()
        for p in self.predictors.values():
            p.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, job: Job, on_stage: Any) -> dict[str, Any]:
        """One job, in a worker thread: the msa-predict JSON with the client's name and a plot URL."""
        plot = self.plots / f"{job.id}.png" if job.plot else None
        predictor = self.predictors[job.bundle]
        default = 0.0 if predictor.kind == "phq8" else self.config.segments  # PHQ-8: whole sessions
        out = predict_json(predictor, job.clip, job.transcript, plot, on_stage=on_stage,
                           segments=default if job.segments is None else job.segments)
        out["clip"] = job.name
        if plot is not None:
            out["plot"] = f"/v1/jobs/{job.id}/plot.png"
        return out

    def bundle(self, name: str | None) -> str:
        if not name:
            return self.default
        if name not in self.predictors:
            raise RequestError(f"unknown bundle {name!r}; loaded: {', '.join(self.predictors)}", status=400,
                               reason="bad_request")
        return name

    def bundle_view(self, name: str) -> dict[str, Any]:
        meta, predictor = self.meta[name], self.predictors[name]
        return {"name": name, "path": str(predictor.options.bundle), "task": predictor.kind,
                "dataset": meta["task"].get("name"), "range": meta.get("output_range"),
                "modalities": meta.get("modalities", []), "model": meta.get("model", {}).get("name"),
                "provenance": meta.get("provenance", {}), "default": name == self.default}


def error(message: str, reason: str, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split()), "reason": reason},
                        status_code=status or STATUS.get(reason, 500))


def flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise RequestError(f"expected true or false, got {value!r}", status=400, reason="bad_request")


def seconds_field(value: Any) -> float | None:
    """A request's ``segments`` (seconds of speech per run, 0: the whole clip); None when absent."""
    if value is None or value == "":
        return None
    try:
        return check_seconds(float(value))
    except (TypeError, ValueError, MsaError) as e:
        raise RequestError(f"segments: expected a positive number of seconds (0: off), got {value!r}",
                           status=400, reason="bad_request") from e


async def _job_from_request(svc: Service, request: Request) -> Job:
    """Read the request into a queued-to-be Job: an upload (streamed, size-checked) or a path."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    query = request.query_params
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            raise RequestError(f"request body is not JSON ({e})", status=400, reason="bad_request") from e
        if not isinstance(body, dict):
            raise RequestError("JSON body must be an object with a 'path'", status=400, reason="bad_request")
        clip = path_under(svc.config.allow_root, body.get("path"))
        return Job(clip=clip, name=str(body["path"]), bundle=svc.bundle(body.get("bundle") or query.get("bundle")),
                   plot=flag(str(body["plot"]) if "plot" in body else query.get("plot"), True),
                   segments=seconds_field(body.get("segments", query.get("segments"))))
    if kind != "multipart/form-data":
        raise RequestError("send the clip as multipart/form-data (field 'file') or JSON {\"path\": ...}",
                           status=415, reason="bad_request")
    folder = Path(tempfile.mkdtemp(dir=svc.uploads))
    try:
        up = await receive_upload(request.headers, request.stream(), folder,
                                  int(svc.config.max_upload_mb * 2**20))
        assert up.clip is not None
        transcript, text = None, up.fields.get("transcript", "")
        if text.strip():  # plain text, or a subtitle file's content (its cues then time the words)
            transcript = folder / f"transcript{subtitle_suffix(text)}"
            transcript.write_text(text, encoding="utf-8")
        return Job(clip=up.clip, name=up.name, bundle=svc.bundle(up.fields.get("bundle") or query.get("bundle")),
                   plot=flag(up.fields.get("plot") or query.get("plot"), True), workdir=folder, transcript=transcript,
                   segments=seconds_field(up.fields.get("segments") or query.get("segments")))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


async def _probe(job: Job) -> float:
    """Media seconds of the job's clip: a file that is not media is refused here, before it queues."""
    from msa.pipeline.extract.media import probe

    try:
        info = await asyncio.to_thread(probe, job.clip)
    except MsaError as e:
        raise RequestError(e.one_line().replace(str(job.clip), job.name), status=STATUS.get(e.reason, 500),
                           reason=e.reason) from e
    return info.duration or 0.0


async def predict(request: Request) -> Response:
    svc: Service = request.app.state.service
    try:
        job = await _job_from_request(svc, request)
        try:
            wait = flag(request.query_params.get("wait"), True)
            if wait:  # a long clip becomes a job at once: 202 + /v1/jobs/{id}
                wait = await _probe(job) <= svc.config.long_seconds
            svc.jobs.submit(job)
        except BaseException:
            if job.workdir is not None:
                shutil.rmtree(job.workdir, ignore_errors=True)
            raise
    except ClientDisconnect:
        return Response(status_code=499)
    if not wait:
        return JSONResponse(job.view(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
    while not job.finished.is_set():  # a client that disconnects cancels its job
        job.seen = time.monotonic()
        if await request.is_disconnected():
            svc.jobs.cancel(job)
            return Response(status_code=499)
        await asyncio.sleep(POLL_S)
    if job.status == "done":
        return JSONResponse(job.result)
    assert job.error is not None
    return error(job.error["error"], job.error["reason"])


def _job(request: Request) -> Job:
    job = request.app.state.service.jobs.get(request.path_params["job_id"])
    if job is None:
        raise RequestError(f"no job {request.path_params['job_id']} (finished jobs are kept for an hour)",
                           status=404, reason="not_found")
    return job


async def get_job(request: Request) -> Response:
    return JSONResponse(_job(request).view())


async def delete_job(request: Request) -> Response:
    job = _job(request)
    request.app.state.service.jobs.cancel(job)
    return JSONResponse(job.view(), status_code=202)


async def get_plot(request: Request) -> Response:
    job = _job(request)
    path = request.app.state.service.plots / f"{job.id}.png"
    if job.status != "done" or not path.is_file():
        raise RequestError(f"job {job.id} has no plot ({job.status})", status=404, reason="not_found")
    return FileResponse(path, media_type="image/png")


async def health(request: Request) -> Response:
    svc: Service = request.app.state.service
    return JSONResponse({"status": "ok", "bundles": list(svc.predictors), "workers": svc.config.workers,
                         "jobs": svc.jobs.counts(), "stages": list(JOB_STAGES)})


async def bundles(request: Request) -> Response:
    svc: Service = request.app.state.service
    return JSONResponse([svc.bundle_view(name) for name in svc.predictors])


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error(exc.one_line(), exc.reason, exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(str(exc.detail), "not_found" if exc.status_code == 404 else "bad_request", exc.status_code)


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("request %s %s crashed", request.method, request.url.path)
    return error(f"internal error ({type(exc).__name__})", "internal", 500)


def create_app(config: ServeConfig, service: Service | None = None) -> Starlette:
    """The ASGI app; loads every bundle (or uses ``service``) before it serves anything."""
    svc = service or Service(config)
    routes = [
        Route("/", index),
        Route("/v1/health", health),
        Route("/v1/bundles", bundles),
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/jobs/{job_id}", get_job),
        Route("/v1/jobs/{job_id}", delete_job, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/plot.png", get_plot),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))] \
        if config.allowed_hosts else []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        svc.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={RequestError: _request_error, HTTPException: _http_error, Exception: _crash})
    app.state.service = svc
    return app
