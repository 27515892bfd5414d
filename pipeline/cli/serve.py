"""msa-serve: a local web service and page on top of msa-predict's Predictor.

    msa-serve [--host 127.0.0.1] [--port 8000] [--bundle DIR ...] [--workers N] [--max-upload-mb 500]
              [--allow-root DIR] [--long-seconds 60] [--segments SECONDS]

Loads every bundle once, then serves the page at http://HOST:PORT/ and the JSON API under /v1
(README "Web service"). It binds to 127.0.0.1 by default: only this machine can reach it.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import time
from pathlib import Path

from msa.core.heap import keep_heap
from msa.pipeline.cli.common import run

PROG = "msa-serve"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--bundle", type=Path, nargs="+", default=None, metavar="DIR",
                   help="bundle folder(s) to load; the first is the default (default: the shipped sentiment bundle)")
    p.add_argument("--workers", type=int, default=1, help="clips scored at once (default 1); others queue")
    p.add_argument("--max-queued", type=int, default=32, help="clips waiting at most; more are refused with 503")
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest upload accepted (default 500 MB)")
    p.add_argument("--allow-root", type=Path, default=None, metavar="DIR",
                   help="allow JSON requests {\"path\": ...} for files under DIR (default: uploads only)")
    p.add_argument("--long-seconds", type=float, default=60.0,
                   help="clips longer than this many media seconds are answered at once with a job (202)")
    p.add_argument("--asr", default="whisper", metavar="NAME", help="speech recogniser (default whisper, offline)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--segments", type=float, default=0.0, metavar="SECONDS",
                   help="score sentiment and class bundles in runs of about SECONDS of speech, as msa-predict "
                        "--segments does (PHQ-8 bundles score whole sessions)")
    return p


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _main(args: argparse.Namespace) -> int:
    from msa.core.errors import UsageError
    from msa.pipeline.serve.predict import resolve_bundle

    if args.workers < 1 or args.max_queued < 1:
        raise UsageError("--workers and --max-queued must be at least 1")
    if args.max_upload_mb <= 0:
        raise UsageError("--max-upload-mb must be positive")
    from msa.pipeline.serve.segments import check_seconds

    check_seconds(args.segments)
    if args.allow_root is not None and not args.allow_root.is_dir():
        raise UsageError(f"--allow-root: no such folder: {args.allow_root}")
    bundles = tuple(args.bundle or (resolve_bundle(None, None),))
    for b in bundles:
        if not (b / "bundle.json").is_file():
            raise UsageError(f"--bundle: {b} has no bundle.json")
    # bind first: a port in use is one line, before seconds of model loading
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from e
    if not loopback(args.host):
        print(f"{PROG}: warning: listening on {args.host}: anyone who can reach this machine can upload clips",
              file=sys.stderr, flush=True)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    import uvicorn

    from msa.pipeline.serve.service import ServeConfig, create_app

    config = ServeConfig(bundles=bundles, workers=args.workers, max_upload_mb=args.max_upload_mb,
                         allow_root=args.allow_root, long_seconds=args.long_seconds, max_queued=args.max_queued,
                         asr=args.asr, device=args.device, segments=args.segments,
                         allowed_hosts=(args.host, "127.0.0.1", "localhost") if loopback(args.host) and ":" not in args.host
                         else None)  # a page elsewhere cannot reach a loopback service by DNS rebinding
    t0 = time.perf_counter()
    app = create_app(config)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    names = ", ".join(app.state.service.predictors)
    print(f"{PROG}: loaded {names} in {time.perf_counter() - t0:.1f} s; serving {url} (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    server.run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    keep_heap()  # trimmed once the job queue has been idle 2 s (service.py: JobQueue's on_idle)
    return run(PROG, build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
