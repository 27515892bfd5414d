"""Helpers for the fault suite: run the real CLIs (in-process or as subprocesses) and judge the outcome.

Run as a script, this file is the CLI entry point used by subprocess tests: it registers the small
fake extractors of ``tests/pipeline/extract_fakes.py`` and runs one of the real CLIs, e.g.
``python faultkit.py extract INPUT --out OUT ...`` (exit code and streams are the CLI's own).

``TALLY`` counts, over the session, the CLI runs judged, the error runs, tracebacks seen and finished
clips lost; ``conftest.py`` prints it at the end (the figures of docs/reliability.md).
"""
from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
FAKES_DIR = HERE.parent / "pipeline"
if str(FAKES_DIR) not in sys.path:
    sys.path.insert(0, str(FAKES_DIR))

import extract_fakes  # noqa: E402  (tests/pipeline/extract_fakes.py)
from extract_fakes import FAKE_RECIPE, calls  # noqa: E402,F401
from msa.extractors import EXTRACTORS  # noqa: E402
from msa.extractors.base import Extractor  # noqa: E402

FAKES = f"{FAKE_RECIPE},asr:fake_asr"
TIMEOUT_S = 240
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TALLY: Counter[str] = Counter()
GATE_ENV = "MSA_FAULT_GATE"
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


class FullFrameVisual(Extractor):
    """Mean RGB (every 4th pixel) of every frame at the clip's native rate and size: the whole video passes
    through Python, so holding it instead of streaming would show in peak memory. ``batch_sleep`` keeps
    ffmpeg alive mid-clip (interruption tests); ``log`` records each call."""

    name, version, modality = "fault_fullframe", "1", "visual"

    @dataclass(frozen=True)
    class Config:
        log: str = ""
        batch_sleep: float = 0.0

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return 3, ("r", "g", "b"), None

    def extract(self, clip: Any) -> Any:
        import numpy as np

        from msa.extractors.base import Features

        if self.config.log:
            with open(self.config.log, "a") as f:
                f.write(f"{self.name} {clip.clip_id}\n")
        rows, times = [], []
        for batch in clip.frames(batch=8):
            rows.append(batch.frames[:, ::4, ::4].reshape(len(batch), -1, 3).mean(axis=1, dtype=np.float32) / 255.0)
            times.append(batch.times)
            time.sleep(self.config.batch_sleep)
        return Features(np.concatenate(rows), np.concatenate(times), meta={"face_ratio": 0.0})


def register() -> None:
    """The fakes of tests/pipeline plus this suite's full-frame visual extractor."""
    extract_fakes.register()
    if FullFrameVisual.name not in EXTRACTORS:
        EXTRACTORS.register(FullFrameVisual.name, FullFrameVisual)


@dataclass
class Result:
    """What one CLI run did."""

    rc: int
    out: str
    err: str

    def lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def fake_argv(tool: str, *args: str) -> list[str]:
    """argv running ``msa-<tool>`` in a fresh interpreter with the fake extractors registered."""
    return [sys.executable, str(HERE / "faultkit.py"), tool, *map(str, args)]


def extract_args(inp: Path | str, out: Path | str, *extra: str, log: Path | str | None = None) -> list[str]:
    """msa-extract arguments for the fake recipe (ASR fake too); ``log`` records every audio extraction."""
    sets = ["--set", f"audio.log={log}"] if log else []
    return [str(inp), "--out", str(out), "--extractors", FAKES, *sets, "--quiet", *extra]


def run_sub(argv: Sequence[str], *, preexec: Callable[[], None] | None = None, timeout: float = TIMEOUT_S) -> Result:
    """Run a command to completion; judge nothing (see ``judge``)."""
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=ENV, preexec_fn=preexec,
                       check=False)
    return Result(p.returncode, p.stdout, p.stderr)


def run_inproc(tool: str, argv: Sequence[str], capsys: Any) -> Result:
    """``msa.pipeline.cli.<tool>.main(argv)`` in this process; argparse exits count as a return code."""
    mod = importlib.import_module(f"msa.pipeline.cli.{tool}")
    capsys.readouterr()
    try:
        rc = mod.main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return Result(int(rc or 0), out, err)


def judge(res: Result, *, ok: bool = False, rc: int | None = None, names: Sequence[str] = (),
          reason: str | Sequence[str] = (), n_lines: int = 1, prog: str | None = None) -> Result:
    """Assert the house rules for a CLI run and record it in ``TALLY``. Never a traceback, and:

    ``ok``: exit 0. ``rc``: that exit code (e.g. 130 after Ctrl-C), texts in stderr. Otherwise a failure:
    non-zero exit; ``n_lines`` stderr lines, each ``prog: error: ...``; every text of ``names`` (the
    file) and ``reason`` in them.
    """
    TALLY["cli_runs"] += 1
    if "Traceback" in res.err or "Traceback" in res.out:
        TALLY["tracebacks"] += 1
    assert "Traceback" not in res.err and "Traceback" not in res.out, res.err[-3000:]
    if ok:
        assert res.rc == 0, res.err[-3000:]
        return res
    lines = res.lines()
    if rc is not None:
        TALLY["interrupted_runs"] += 1
        assert res.rc == rc, (res.rc, res.err[-2000:])
    else:
        TALLY["error_runs"] += 1
        assert res.rc != 0, (res.rc, res.err[-2000:])
        assert len(lines) == n_lines, lines
        if prog:
            assert all(ln.startswith(f"{prog}: error: ") for ln in lines), lines
    text = "\n".join(lines)
    for name in names:
        assert str(name) in text, (name, lines)
    for r in [reason] if isinstance(reason, str) else reason:
        assert r in text, (r, lines)
    return res


def drop_dac_caps() -> None:
    """preexec_fn: run the child without the capabilities that let root ignore file permissions.

    Tests run as root in CI containers, where chmod 000 stops nobody; without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH in the bounding set, the exec'd root process obeys the mode bits like a user.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def permissions_enforced(probe_dir: Path) -> bool:
    """True when a child started with ``drop_dac_caps`` cannot read a mode-000 file (the simulation works)."""
    secret = probe_dir / ".perm-probe"
    secret.write_text("x")
    secret.chmod(0)
    try:
        r = subprocess.run([sys.executable, "-c", f"open({str(secret)!r}).read()"], capture_output=True,
                           timeout=60, preexec_fn=drop_dac_caps, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        secret.chmod(0o600)
        secret.unlink()
    return r.returncode != 0 and b"PermissionError" in r.stderr


def file_size_limit(nbytes: int) -> Callable[[], None]:
    """preexec_fn: a file-size limit (RLIMIT_FSIZE), i.e. a disk that fills up after ``nbytes`` per file."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def cache_state(out: Path, killed: bool = False) -> dict[str, bytes]:
    """Every cache entry (relative path -> bytes); asserts each one is complete and loads, and no temp
    file or stop marker is left behind. ``killed``: the run was SIGKILLed, so a write in flight may have
    left its hidden temp file (never read as an entry; the next run sweeps it)."""
    from msa.pipeline.extract.cache import unpack

    root = out / "cache"
    if not killed:
        assert not list(root.rglob("*.tmp")), list(root.rglob("*.tmp"))
    assert all(p.name.startswith(".") for p in root.rglob("*.tmp")), list(root.rglob("*.tmp"))
    assert not list(root.glob(".stop-*"))
    state = {}
    for p in sorted(root.rglob("*.pkl")):
        data = p.read_bytes()
        unpack(data)  # ValueError when truncated or corrupt
        state[str(p.relative_to(root))] = data
    return state


def lost(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """Cache entries finished before a fault that are gone or changed after it (recorded in TALLY)."""
    gone = [k for k, v in before.items() if after.get(k) != v]
    TALLY["finished_entries_checked"] += len(before)
    TALLY["finished_entries_lost"] += len(gone)
    return gone


def load_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)  # our own test output


def wait_for(cond: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def peak_rss_mib(argv: Sequence[str], timeout: float = TIMEOUT_S) -> tuple[Result, float]:
    """Run to completion; the peak RSS (MiB) of the process and its waited-for children (ffmpeg)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, text=True, env=ENV)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read(), err.read()), usage.ru_maxrss / 1024


def popen(argv: Sequence[str], gate: Path | None = None, **kw: Any) -> subprocess.Popen[str]:
    """Start a CLI; with ``gate``, the child imports everything and then waits for that file to appear,
    so several children can be released at the same moment."""
    env = {**ENV, GATE_ENV: str(gate)} if gate else ENV
    return subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def finish(proc: subprocess.Popen[str], timeout: float = TIMEOUT_S) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Result(proc.returncode, out, err)


def sigint(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)


def _main() -> None:
    register()
    tool, argv = sys.argv[1], sys.argv[2:]
    mod = importlib.import_module(f"msa.pipeline.cli.{tool}")
    if os.environ.get(GATE_ENV):
        importlib.import_module("msa.pipeline.extract.runner")
        wait_for(Path(os.environ[GATE_ENV]).exists, what="the start gate")
    sys.exit(mod.main(argv))


if __name__ == "__main__":
    _main()
