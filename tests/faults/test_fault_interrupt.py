"""Interruption and concurrency: Ctrl-C, SIGKILL, damaged cache files and two msa-extract processes on one
output folder. Every case ends with a rerun whose features file is byte-identical to an uninterrupted
run's, and checks that no finished cache entry was lost or changed.

The CLI runs in child processes (``faultkit.py extract ...``: the real msa-extract with the small fake
extractors; the fake audio extractor logs each call and can sleep, so a clip is reliably in flight).
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any
import pytest

from faultkit import (cache_state, calls, extract_args, fake_argv, finish, judge, lost, popen, run_sub, sigint,
                      wait_for)

N_CLIPS = 5


def inputs(root: Path, media: dict[str, Path], n: int = N_CLIPS) -> Path:
    """``n`` clips with distinct bytes (so each is its own extraction), sorted c0..c{n-1}."""
    root.mkdir()
    for i in range(n):
        (root / f"c{i}.mp4").write_bytes(media["good"].read_bytes() + bytes(i + 1))
    return root


def reference(tmp_path: Path, inp: Path, log: Path | None, *extra: str) -> bytes:
    """An uninterrupted run's features file (the same fake config, so the same spec hashes)."""
    judge(run_sub(fake_argv("extract", *extract_args(inp, tmp_path / "ref", *extra, log=log))), ok=True)
    return (tmp_path / "ref" / "features.pkl").read_bytes()


def audio_entries(out: Path) -> int:
    return len(list((out / "cache" / "fake_audio").glob("*/*.pkl")))


def test_ctrl_c_finishes_the_clip_in_flight_and_the_rerun_resumes(media: dict[str, Path], tmp_path: Path) -> None:
    inp, log, out = inputs(tmp_path / "in", media), tmp_path / "audio.log", tmp_path / "out"
    want = reference(tmp_path, inp, log, "--set", "audio.sleep=0.4")
    argv = fake_argv("extract", *extract_args(inp, out, "--set", "audio.sleep=0.4", log=log))
    proc = popen(argv)
    wait_for(lambda: len(calls(log)) >= N_CLIPS + 2, what="the second clip in flight")
    sigint(proc)
    res = judge(finish(proc), rc=130, reason=["stopping after the clip(s) in flight", "interrupted after 2 of 5 clips",
                                              "Rerun the same command to resume"])
    assert len(res.lines()) == 2
    before = cache_state(out)
    assert audio_entries(out) == 2 and len(calls(log)) == N_CLIPS + 2  # the clip in flight was finished
    assert (out / "errors.jsonl").read_text() == "" and not (out / "features.pkl").exists()
    judge(run_sub(argv), ok=True)
    assert len(calls(log)) == N_CLIPS * 2  # nothing finished was extracted again
    assert lost(before, cache_state(out)) == []
    assert (out / "features.pkl").read_bytes() == want


def test_second_ctrl_c_stops_at_once_and_the_cache_stays_consistent(media: dict[str, Path], tmp_path: Path) -> None:
    inp, log, out = inputs(tmp_path / "in", media), tmp_path / "audio.log", tmp_path / "out"
    want = reference(tmp_path, inp, log, "--set", "audio.sleep=0.8")
    argv = fake_argv("extract", *extract_args(inp, out, "--set", "audio.sleep=0.8", log=log))
    proc = popen(argv)
    wait_for(lambda: len(calls(log)) >= N_CLIPS + 2, what="the second clip in flight")
    sigint(proc)
    wait_for(lambda: (out / "cache" / f".stop-{proc.pid}").exists(), what="the first Ctrl-C handled")
    sigint(proc)
    res = judge(finish(proc), rc=130)
    assert res.lines()[-1] == "msa-extract: stopped; finished clips are cached. Rerun the same command to resume."
    before = cache_state(out)  # every entry complete; the clip in flight left nothing behind
    assert audio_entries(out) == 1
    judge(run_sub(argv), ok=True)
    assert len(calls(log)) == N_CLIPS * 2 + 1  # only the discarded clip in flight ran twice
    assert lost(before, cache_state(out)) == []
    assert (out / "features.pkl").read_bytes() == want


def test_ctrl_c_in_a_terminal_mid_decode_finishes_the_clip_in_flight(make_clip: Any, tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group. Frames decode in-process, so there is no child
    for it to kill mid-way: the clip in flight finishes and is cached, as with a Ctrl-C to msa-extract
    alone, and the rerun extracts only the clip that never started."""
    clip = make_clip(duration=4.0, fps=25, size=(160, 120))
    inp = inputs(tmp_path / "in", {"good": clip}, 3)
    log, out = tmp_path / "visual.log", tmp_path / "out"
    sets = ["--extractors", "visual:fault_fullframe", "--set", f"visual.log={log}", "--set", "visual.batch_sleep=0.1"]
    want = reference(tmp_path, inp, None, *sets)
    argv = fake_argv("extract", *extract_args(inp, out, *sets))
    proc = popen(argv, start_new_session=True)
    wait_for(lambda: len(calls(log)) >= 3 + 2, what="the second clip decoding")
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    res = judge(finish(proc), rc=130)
    assert "Rerun the same command to resume" in res.lines()[-1]
    before = cache_state(out)
    assert len(list((out / "cache" / "fault_fullframe").glob("*/*.pkl"))) == 2  # clips 1 and 2 done, 3 not begun
    assert (out / "errors.jsonl").read_text() == ""
    judge(run_sub(argv), ok=True)
    assert len(calls(log)) == 3 * 2 and lost(before, cache_state(out)) == []  # the rerun ran clip 3 only
    assert (out / "features.pkl").read_bytes() == want


@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_then_rerun_equals_an_uninterrupted_run(jobs: int, media: dict[str, Path], tmp_path: Path) -> None:
    inp, log, out = inputs(tmp_path / "in", media), tmp_path / "audio.log", tmp_path / "out"
    want = reference(tmp_path, inp, log, "--set", "audio.sleep=0.4")
    argv = fake_argv("extract", *extract_args(inp, out, "--set", "audio.sleep=0.4", "--jobs", str(jobs), log=log))
    proc = popen(argv, start_new_session=True)
    try:
        wait_for(lambda: len(calls(log)) >= N_CLIPS + 3, what="three clips started")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its loky workers, like an OOM kill or power loss
        judge(finish(proc), rc=-signal.SIGKILL)
    before = cache_state(out, killed=True)  # no half-written entry is visible (temp files of the kill aside)
    started = len(calls(log)) - N_CLIPS
    judge(run_sub(argv), ok=True)
    assert lost(before, cache_state(out)) == []
    redone = len(calls(log)) - N_CLIPS - N_CLIPS
    assert 0 <= redone <= jobs and started - redone <= audio_entries(out)  # only clips in flight ran again
    assert (out / "features.pkl").read_bytes() == want
    assert not list((out / "cache").rglob("*.tmp"))  # the rerun swept the killed run's temp files


def test_damaged_cache_files_are_detected_and_reextracted(media: dict[str, Path], tmp_path: Path) -> None:
    inp, out = inputs(tmp_path / "in", media), tmp_path / "out"
    logs = {m: tmp_path / f"{m}.log" for m in ("asr", "text", "audio", "visual")}
    sets = [a for m, p in logs.items() for a in ("--set", f"{m}.log={p}")]
    argv = fake_argv("extract", *extract_args(inp, out, *sets))
    judge(run_sub(argv), ok=True)
    want = (out / "features.pkl").read_bytes()
    state = cache_state(out)
    first = {m: len(calls(p)) for m, p in logs.items()}
    assert first == {"asr": N_CLIPS, "text": 1, "audio": N_CLIPS, "visual": N_CLIPS}  # one transcript, one text entry
    from msa.core.hashing import file_sha256

    sha = {i: file_sha256(inp / f"c{i}.mp4") for i in range(N_CLIPS)}
    cache = out / "cache"
    [a0] = cache.glob(f"fake_audio/*/{sha[0]}.pkl")
    [a1] = cache.glob(f"fake_audio/*/{sha[1]}.pkl")
    [v2] = cache.glob(f"fake_visual/*/{sha[2]}.pkl")
    [s3] = cache.glob(f"fake_asr/*/{sha[3]}.pkl")
    [p4] = cache.glob(f"probe/*/{sha[4]}.pkl")
    a0.write_bytes(a0.read_bytes()[: a0.stat().st_size // 2])  # truncated
    a1.write_bytes(b"")  # zero bytes
    v2.write_bytes(random.Random(1).randbytes(v2.stat().st_size))  # garbage of the right size
    data = bytearray(s3.read_bytes())
    data[-5] ^= 0xFF  # one flipped payload byte, header intact
    s3.write_bytes(bytes(data))
    p4.write_bytes(p4.read_bytes()[:10])
    for memo in (cache / "specs").glob("*.json"):
        memo.write_text("{truncated")
    stale = a0.parent / f".{a0.name}.999999.abc.tmp"  # a temp file of a killed writer (pid 999999 is gone)
    stale.write_bytes(b"partial")
    res = judge(run_sub(argv), ok=True)
    assert "is unusable" in res.err  # each damaged file is named as it is dropped
    again = {m: len(calls(p)) - first[m] for m, p in logs.items()}
    assert again == {"asr": 1, "text": 0, "audio": 2, "visual": 1}  # exactly the damaged entries
    assert (out / "features.pkl").read_bytes() == want
    after = cache_state(out)
    damaged = {str(p.relative_to(cache)) for p in (a0, a1, v2, s3, p4)}
    assert lost({k: v for k, v in state.items() if k not in damaged}, after) == []
    assert after.keys() == state.keys() and not stale.exists()
    assert all(json.loads(m.read_text()) for m in (cache / "specs").glob("*.json"))


def test_two_processes_on_one_output_folder_never_duplicate_work(media: dict[str, Path], tmp_path: Path) -> None:
    n = 6
    inp, log, out = inputs(tmp_path / "in", media, n), tmp_path / "audio.log", tmp_path / "out"
    want = reference(tmp_path, inp, log, "--set", "audio.sleep=0.5")
    argv = fake_argv("extract", *extract_args(inp, out, "--set", "audio.sleep=0.5", log=log))
    gate = tmp_path / "go"
    procs = [popen(argv, gate=gate) for _ in range(2)]
    time.sleep(1.0)
    gate.touch()  # both start together
    results = [finish(p) for p in procs]
    for r in results:
        judge(r, ok=True)
    mine = calls(log)[n:]
    assert sorted(mine) == sorted(set(mine)) and len(mine) == n  # each clip extracted once, by one of them
    done = [int(re.search(r"\((\d+) extracted", r.out).group(1)) for r in results]  # type: ignore[union-attr]
    assert min(done) >= 1, done  # they shared the work (the log above proves no clip ran twice)
    assert (out / "features.pkl").read_bytes() == want
    cache_state(out)
    assert not list((out / "cache" / "locks").iterdir())
