"""The output folder cannot take the data: not a folder, not writable, or the disk fills up.

Each case: a one-line error naming the place and the reason, a non-zero exit, and nothing already
written (cache entries, a previous features file) damaged; after the fault is fixed the rerun
resumes and equals an uninterrupted run.

Simulations, since tests run as root: a read-only folder is enforced by running the CLI without
CAP_DAC_OVERRIDE (``faultkit.drop_dac_caps``); a full disk is a per-file size limit (RLIMIT_FSIZE,
EFBIG) and, where this machine allows mounting, a real 96 KiB tmpfs (ENOSPC).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from faultkit import (cache_state, calls, drop_dac_caps, extract_args, fake_argv, file_size_limit, judge, lost,
                      permissions_enforced, run_inproc, run_sub)

HOP = "audio.hop=0.002"  # 500 audio rows per second: cache entries big enough to hit a small size limit


def clips(root: Path, media: dict[str, Path], names: dict[str, str]) -> Path:
    root.mkdir(exist_ok=True)
    for i, (name, src) in enumerate(names.items()):
        (root / f"{name}.mp4").write_bytes(media[src].read_bytes() + bytes(i + 1))
    return root


def test_output_path_inside_a_regular_file(media: dict[str, Path], tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = run_inproc("extract", extract_args(media["good"], blocker / "out"), capsys)
    judge(res, names=[blocker / "out"], reason=["not writable", "Not a directory"], prog="msa-extract")
    assert blocker.read_text() == "not a folder"


def test_read_only_output_folder(media: dict[str, Path], tmp_path: Path) -> None:
    if not permissions_enforced(tmp_path):
        pytest.skip("cannot run a child without CAP_DAC_OVERRIDE here (no CAP_SETPCAP)")
    inp = clips(tmp_path / "in", media, {"a": "good", "b": "good2"})
    log = tmp_path / "audio.log"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fresh.chmod(0o555)
    try:
        res = run_sub(fake_argv("extract", *extract_args(inp, fresh, log=log)), preexec=drop_dac_caps)
    finally:
        fresh.chmod(0o755)
    judge(res, names=[fresh], reason=["not writable", "Permission denied"], prog="msa-extract")
    assert list(fresh.iterdir()) == [] and calls(log) == []

    out = tmp_path / "out"
    argv = fake_argv("extract", *extract_args(inp, out, log=log))
    judge(run_sub(argv), ok=True)
    old, before = (out / "features.pkl").read_bytes(), cache_state(out)
    clips(inp, media, {"a": "good", "b": "good2", "c": "short"})  # one new clip to extract
    dirs = [p for p in (out / "cache").rglob("*") if p.is_dir()] + [out / "cache"]
    for d in dirs:
        d.chmod(0o555)
    try:
        res = run_sub(argv, preexec=drop_dac_caps)
    finally:
        for d in dirs:
            d.chmod(0o755)
    judge(res, names=[out], reason=["cannot write", "Permission denied", "rerun to resume"], prog="msa-extract")
    assert (out / "features.pkl").read_bytes() == old and lost(before, cache_state(out)) == []
    judge(run_sub(argv), ok=True)
    assert len(calls(log)) == 3  # a and b once each (first run), c once (after the fix)


def test_disk_fills_up_during_extraction_then_during_assembly(media: dict[str, Path], tmp_path: Path) -> None:
    inp = clips(tmp_path / "in", media, {"a": "good", "b": "good"})
    log = tmp_path / "audio.log"
    every = {"a": "good", "b": "good", "c": "good2", "d": "good2"}  # c and d: 1.2 s, bigger entries
    (tmp_path / "ref_src").mkdir()
    ref_in = clips(tmp_path / "ref_src" / "in", media, every)  # same folder name: same clip ids
    judge(run_sub(fake_argv("extract", *extract_args(ref_in, tmp_path / "ref", "--set", HOP, log=log))), ok=True)
    want = (tmp_path / "ref" / "features.pkl").read_bytes()
    sizes = {p.stem: p.stat().st_size for p in (tmp_path / "ref" / "cache" / "fake_audio").glob("*/*.pkl")}
    small, big = min(sizes.values()), max(sizes.values())
    assert small < big < len(want)

    out = tmp_path / "out"
    argv = fake_argv("extract", *extract_args(inp, out, "--set", HOP, log=log))
    judge(run_sub(argv), ok=True)
    old, before = (out / "features.pkl").read_bytes(), cache_state(out)
    clips(inp, media, every)
    # 1) the disk fills while extracting c: the run stops with one line; a, b and their output are intact
    res = run_sub(argv, preexec=file_size_limit((small + big) // 2))
    judge(res, names=[out], reason=["cannot write", "File too large", "rerun to resume"], prog="msa-extract")
    after = cache_state(out)
    assert lost(before, after) == [] and (out / "features.pkl").read_bytes() == old
    # 2) room for the cache but not for the features file: every clip cached, the old file untouched
    res = run_sub(argv, preexec=file_size_limit((big + len(want)) // 2))
    judge(res, names=[out], reason=["cannot write the features file", "every clip is cached"], prog="msa-extract")
    assert (out / "features.pkl").read_bytes() == old and lost(after, cache_state(out)) == []
    n = len(calls(log))
    # 3) space again: nothing is extracted twice and the output equals an uninterrupted run's
    judge(run_sub(argv), ok=True)
    assert len(calls(log)) == n and (out / "features.pkl").read_bytes() == want


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if not shutil.which("mount"):
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                       timeout=30, check=False)
    return r.returncode == 0


def test_a_really_full_disk(media: dict[str, Path], tmp_path: Path) -> None:
    """ENOSPC from a 96 KiB tmpfs holding the output folder (skipped where mounting is not allowed).
    The user's fix, moving the folder to a bigger disk, resumes without redoing finished clips."""
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "96k"):
        pytest.skip("cannot mount a small tmpfs here")
    log = tmp_path / "audio.log"
    inp = clips(tmp_path / "in", media, {f"c{i}": "good2" for i in range(8)})
    try:
        out = small / "out"
        res = run_sub(fake_argv("extract", *extract_args(inp, out, "--set", HOP, log=log)))
        judge(res, names=[out], reason=["cannot write", "No space left on device"], prog="msa-extract")
        before = cache_state(out)
        done = len(list((out / "cache" / "fake_audio").glob("*/*.pkl")))
        redo = len(calls(log)) - done  # 1 when the disk filled up while caching a clip's audio
        assert 0 < done < 8 and redo in (0, 1)
        shutil.copytree(out, tmp_path / "big")
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True, timeout=30, check=False)
    big = tmp_path / "big"
    judge(run_sub(fake_argv("extract", *extract_args(inp, big, "--set", HOP, log=log))), ok=True)
    assert lost(before, cache_state(big)) == [] and len(calls(log)) == 8 + redo  # finished clips not redone
