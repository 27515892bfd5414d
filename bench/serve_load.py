"""Load-test msa-serve on 127.0.0.1: many uploads at once, latency percentiles, nothing lost or mixed up.

Starts msa-serve's app in this process (uvicorn on 127.0.0.1, a free port), then sends ``--requests``
uploads, ``--concurrency`` at a time, cycling over ``--clips`` distinct example clips (synthesised
speech over a face photo, each at another frame rate so each is a different file; Whisper
transcribes each once, repeats are feature-cache hits as a re-sent clip would be). Every request has a
unique name (and, with ``--transcripts``, a unique transcript in the form field ``transcript``), and
its answer must carry it back: a response that came back for another request counts as mixed up.

    python bench/serve_load.py [--bundle DIR] [--workers 2] [--requests 50] [--concurrency 8] [--clips 5]

It sets malloc as msa-serve does (``keep_heap``; any ``MALLOC_*`` variable leaves glibc's default), and
reports the process's peak RSS and its RSS 3 s after the last answer (the heap trimmed, as msa-serve trims
it once its queue has been idle for 2 s).

The test suite runs the same ``run_load`` against fake extractors (tests/pipeline/serve/test_service_load.py).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class Sent:
    """One request: the name it uploads under, the file, and the transcript it sends ('' for none)."""

    name: str
    clip: Path
    transcript: str


@dataclass(frozen=True)
class Answer:
    """What came back for a request, and how long it took."""

    sent: Sent
    status: int
    seconds: float
    body: dict[str, Any]

    @property
    def mixed_up(self) -> bool:
        """A 200 whose clip name (or given transcript) belongs to another request."""
        if self.status != 200:
            return False
        return self.body.get("clip") != self.sent.name or \
            bool(self.sent.transcript) and self.body.get("transcript") != self.sent.transcript


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def requests_for(clips: list[Path], n: int, transcripts: bool = True) -> list[Sent]:
    """``n`` requests over ``clips``, each with its own name (and its own transcript)."""
    words = ("good", "bad", "fine", "awful", "great", "dull", "lovely", "grim")
    return [Sent(f"r{i:03d}_{clips[i % len(clips)].name}", clips[i % len(clips)],
                 f"request {i} was {words[i % len(words)]} and {words[(i // len(words)) % len(words)]}"
                 if transcripts else "")
            for i in range(n)]


def run_load(url: str, sent: list[Sent], concurrency: int, timeout_s: float = 600.0) -> tuple[list[Answer], float]:
    """POST every request (``concurrency`` at a time) to ``url``/v1/predict; answers in order, wall seconds."""
    import httpx

    def one(s: Sent) -> Answer:
        t0 = time.perf_counter()
        with open(s.clip, "rb") as f:
            r = client.post(f"{url}/v1/predict", params={"plot": "false"},
                            files={"file": (s.name, f, "video/mp4")},
                            data={"transcript": s.transcript} if s.transcript else None)
        try:
            body = r.json()
        except ValueError:
            body = {"error": r.text[:200]}
        return Answer(s, r.status_code, time.perf_counter() - t0, body)

    t0 = time.perf_counter()
    with httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency)) as client, \
            ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, sent))
    return answers, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ranked = sorted(values)
    return ranked[max(0, min(len(ranked) - 1, int(round(q / 100 * len(ranked) + 0.5)) - 1))]


def summary(answers: list[Answer], wall: float) -> dict[str, Any]:
    seconds = [a.seconds for a in answers]
    statuses: dict[str, int] = {}
    for a in answers:
        statuses[str(a.status)] = statuses.get(str(a.status), 0) + 1
    return {"requests": len(answers), "status": statuses, "mixed_up": sum(a.mixed_up for a in answers),
            "wall_s": round(wall, 2), "per_s": round(len(answers) / wall, 2),
            **{f"p{q}_s": round(percentile(seconds, q), 3) for q in (50, 90, 99)}, "max_s": round(max(seconds), 3)}


def status_mib(key: str) -> float | None:
    """VmRSS / VmHWM of this process in MiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            return round(int(next(ln for ln in f if ln.startswith(key + ":")).split()[1]) / 1024, 1)
    except (OSError, StopIteration):
        return None


def main() -> None:
    from msa.core.heap import keep_heap

    keep_heap()  # as msa-serve does (any MALLOC_* variable turns it off)
    from msa.pipeline.serve.demo import make_example_clip
    from msa.pipeline.serve.predict import resolve_bundle
    from msa.pipeline.serve.service import ServeConfig, create_app

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the shipped one)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--clips", type=int, default=5, help="distinct clips (the others are feature-cache hits)")
    p.add_argument("--transcripts", action="store_true", help="send a transcript with each request (no ASR)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="msa-bench-serve-") as tmp:
        clips = [make_example_clip(Path(tmp) / f"c{i}.mp4", fps=10 + i) for i in range(args.clips)]
        t0 = time.perf_counter()
        app = create_app(ServeConfig(bundles=(args.bundle or resolve_bundle(None, None),), workers=args.workers))
        load_s = time.perf_counter() - t0
        with serving(app) as url:
            answers, wall = run_load(url, requests_for(clips, args.requests, args.transcripts),
                                     args.concurrency)
            time.sleep(3.0)  # the queue idle past JobQueue's idle_s (2 s): msa-serve has trimmed the heap
            rss = {"rss_idle_mib": status_mib("VmRSS"), "rss_peak_mib": status_mib("VmHWM")}
    out = {"bundle": str(args.bundle or "default"), "workers": args.workers, "concurrency": args.concurrency,
           "clips": args.clips, "transcripts": args.transcripts, "load_s": round(load_s, 2), **summary(answers, wall),
           **rss}
    print(json.dumps(out))
    bad = [a for a in answers if a.status != 200 or a.mixed_up]
    for a in bad[:5]:
        print(f"  {a.sent.name}: {a.status} {a.body}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
