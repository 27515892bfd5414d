"""Bad input through the real CLIs: one line naming the file and the reason for a single clip, an
errors.jsonl entry (with its reason code) and every other clip finished for a batch. Never a traceback.

Unreadable files: the tests run as root, where chmod 000 stops nobody. Those cases run the CLI in a
child process without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (``faultkit.drop_dac_caps``), so the
kernel really refuses the read, exactly as for an ordinary user.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faultkit import (calls, drop_dac_caps, extract_args, fake_argv, judge, load_pickle, permissions_enforced,
                      run_inproc, run_sub)


def errors(out: Path) -> dict[str, tuple[str, str]]:
    """errors.jsonl as clip name -> (stage, reason); every entry names the file at fault (the clip or its
    sidecar transcript) in its message."""
    got = {}
    for line in (out / "errors.jsonl").read_text().splitlines():
        e = json.loads(line)
        assert set(e) >= {"id", "path", "stage", "reason", "message"}, e
        assert str(Path(e["path"]).with_suffix("")) in e["message"], e
        got[e["id"].split("$_$")[-1]] = (e["stage"], e["reason"])
    return got


def clip_names(out: Path) -> list[str]:
    return sorted(i.split("$_$")[-1] for i in load_pickle(out / "features.pkl")["all"]["id"])


# ------------------------------------------------------------------------------- single clip: msa-extract

BAD_SINGLE = {  # bad_media name -> (reason code, words of the message)
    "empty": ("corrupt_media", "empty file"),
    "truncated": ("corrupt_media", "truncated or corrupt"),
    "text_renamed": ("corrupt_media", "not a readable media file"),
    "random_bytes": ("corrupt_media", "not a readable media file"),
}


@pytest.mark.parametrize("name", sorted(BAD_SINGLE))
def test_single_bad_file_is_one_line_naming_file_and_reason(name: str, bad_media: dict[str, Path], tmp_path: Path,
                                                           capsys: Any) -> None:
    reason, words = BAD_SINGLE[name]
    path = bad_media[name]
    res = run_inproc("extract", extract_args(path, tmp_path / "out"), capsys)
    judge(res, names=[path], reason=[reason, words], prog="msa-extract")
    assert (tmp_path / "out" / "errors.jsonl").read_text().count("\n") == 1  # recorded for later, too


@pytest.mark.parametrize("name, reason, stage", [("audio_only", "no_video", "probe"),
                                                 ("video_only", "no_audio", "probe"),
                                                 ("bad_audio", "corrupt_media", "decode")])
def test_single_clip_missing_or_corrupt_stream(name: str, reason: str, stage: str, media: dict[str, Path],
                                               tmp_path: Path, capsys: Any) -> None:
    res = run_inproc("extract", extract_args(media[name], tmp_path / "out"), capsys)
    judge(res, names=[media[name]], reason=[f"[{reason} at {stage}]"], prog="msa-extract")
    if reason != "corrupt_media":  # the message says how to keep such clips; then they extract fine
        assert "--missing empty" in res.err
        judge(run_inproc("extract", extract_args(media[name], tmp_path / "kept", "--missing", "empty"), capsys),
              ok=True)
        d = load_pickle(tmp_path / "kept" / "features.pkl")["all"]
        key = "vision" if reason == "no_video" else "audio"
        assert list(d[f"{key}_lengths"]) == [0] and list(d["flags"])[0].startswith(reason)


def test_a_directory_or_a_missing_path_as_input(bad_media: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    directory = bad_media["directory"]  # an empty folder named like a clip: searched as a folder
    judge(run_inproc("extract", extract_args(directory, tmp_path / "o1"), capsys), names=[directory],
          reason="no media files", prog="msa-extract")
    judge(run_inproc("extract", extract_args(bad_media["missing"], tmp_path / "o2"), capsys),
          names=[bad_media["missing"]], reason="input not found", prog="msa-extract")


def test_a_02_second_clip_extracts(media: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    judge(run_inproc("extract", extract_args(media["short"], tmp_path / "out"), capsys), ok=True)
    d = load_pickle(tmp_path / "out" / "features.pkl")["all"]
    assert list(d["audio_lengths"]) == [2] and list(d["vision_lengths"]) == [1]  # 0.1 s hop, 5 fps
    assert np.isfinite(d["audio"]).all() and np.isfinite(d["vision"]).all()


@pytest.mark.parametrize("name", ["with space.mp4", "ünïcödé ✓.mp4", "-leading-dash.mp4"])
def test_odd_path_names(name: str, media: dict[str, Path], tmp_path: Path, capsys: Any,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in dir ü"
    folder.mkdir()
    shutil.copy(media["good"], folder / name)
    monkeypatch.chdir(folder)
    for arg in (f"./{name}", str(folder / name)):  # relative (a '-' name needs ./ or --) and absolute
        judge(run_inproc("extract", extract_args(arg, tmp_path / "out"), capsys), ok=True)
        assert clip_names(tmp_path / "out") == [Path(name).stem]
    argv = extract_args("placeholder", tmp_path / "out2")
    judge(run_inproc("extract", [*argv[1:], "--", name], capsys), ok=True)  # after '--', a bare name
    assert clip_names(tmp_path / "out2") == [Path(name).stem]


# ------------------------------------------------------------------------------------- batch: msa-extract

def build_batch(root: Path, media: dict[str, Path], bad_media: dict[str, Path]) -> dict[str, tuple[str, str] | None]:
    """A folder with every bad input next to good clips; returns clip name -> expected (stage, reason) or None."""
    root.mkdir()
    expect: dict[str, tuple[str, str] | None] = {}

    def put(name: str, src: Path, outcome: tuple[str, str] | None) -> Path:
        dst = root / name
        shutil.copy(src, dst)
        expect[Path(name).stem] = outcome
        return dst

    put("good.mp4", media["good"], None)
    put("with space.mp4", media["good2"], None)
    put("ünï ✓.mp4", media["short"], None)
    put("-dash.mp4", media["good"], None)  # same bytes as good.mp4: extracted once, listed twice
    for name in ("empty", "truncated", "text_renamed", "random_bytes"):
        put(f"{name}.mp4", bad_media[name], ("probe" if name != "truncated" else "decode", "corrupt_media"))
    put("audio_only.wav", media["audio_only"], ("probe", "no_video"))
    put("video_only.mp4", media["video_only"], ("probe", "no_audio"))
    put("bad_audio.mp4", media["bad_audio"], ("decode", "corrupt_media"))
    (root / "dir.mp4").mkdir()
    expect["dir"] = ("hash", "not_found")
    (root / "dangling.mp4").symlink_to(root / "gone.mp4")
    expect["dangling"] = ("hash", "not_found")
    sub = root / "sub"
    sub.mkdir()
    shutil.copy(media["good2"], sub / "nested.mp4")
    expect["nested"] = None
    (sub / "loop").symlink_to(root, target_is_directory=True)  # sub/loop -> root: a symlink loop
    (sub / "self").symlink_to(sub, target_is_directory=True)
    put("empty_sidecar.mp4", media["good2"], ("transcript", "empty_transcript"))
    (root / "empty_sidecar.txt").write_text(" \n\n")
    put("latin1_sidecar.mp4", media["good2"], ("transcript", "bad_transcript"))
    (root / "latin1_sidecar.srt").write_bytes("1\n00:00:00,000 --> 00:00:01,000\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    return expect


def test_batch_records_each_bad_clip_and_finishes_the_rest(media: dict[str, Path], bad_media: dict[str, Path],
                                                           tmp_path: Path, capsys: Any) -> None:
    expect = build_batch(tmp_path / "in", media, bad_media)
    out, asr_log = tmp_path / "out", tmp_path / "asr.log"
    judge(run_inproc("extract", extract_args(tmp_path / "in", out, "--set", f"asr.log={asr_log}"), capsys), ok=True)
    assert errors(out) == {k: v for k, v in expect.items() if v is not None}
    assert clip_names(out) == sorted(k for k, v in expect.items() if v is None)
    transcribed = {line.split(" ", 1)[1] for line in calls(asr_log)}
    assert not transcribed & {"empty_sidecar", "latin1_sidecar"}  # a bad sidecar is not replaced by ASR
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"]["failed"] == sum(v is not None for v in expect.values())


def test_unreadable_files_and_folders(media: dict[str, Path], tmp_path: Path) -> None:
    """chmod 000 on a clip, a sidecar and a sub-folder, with the CLI unable to bypass permissions."""
    if not permissions_enforced(tmp_path):
        pytest.skip("cannot run a child without CAP_DAC_OVERRIDE here (no CAP_SETPCAP)")
    root = tmp_path / "in"
    (root / "locked_dir").mkdir(parents=True)
    for name in ("good.mp4", "locked.mp4", "locked_sidecar.mp4", "locked_dir/inside.mp4"):
        shutil.copy(media["good"] if name != "locked_sidecar.mp4" else media["good2"], root / name)
    (root / "locked_sidecar.txt").write_text("some words")
    locked = [root / "locked.mp4", root / "locked_sidecar.txt", root / "locked_dir"]
    for p in locked:
        p.chmod(0)
    try:
        single = run_sub(fake_argv("extract", *extract_args(root / "locked.mp4", tmp_path / "o1")),
                         preexec=drop_dac_caps)
        judge(single, names=[root / "locked.mp4"], reason=["permission denied", "permission_denied"],
              prog="msa-extract")
        batch = run_sub(fake_argv("extract", *extract_args(root, tmp_path / "o2")), preexec=drop_dac_caps)
    finally:
        for p in locked:
            p.chmod(0o755)
    judge(batch, names=["locked_dir"], reason="cannot read folder", prog="msa-extract")  # never skipped silently
    assert not (tmp_path / "o2" / "cache").exists()  # reported before any extraction
    (root / "locked_dir" / "inside.mp4").unlink()
    (root / "locked_dir").rmdir()
    for p in locked[:2]:
        p.chmod(0)
    try:
        batch = run_sub(fake_argv("extract", *extract_args(root, tmp_path / "o3")), preexec=drop_dac_caps)
    finally:
        for p in locked[:2]:
            p.chmod(0o644)
    judge(batch, ok=True)
    assert errors(tmp_path / "o3") == {"locked": ("hash", "permission_denied"),
                                       "locked_sidecar": ("transcript", "bad_transcript")}
    assert clip_names(tmp_path / "o3") == ["good"]


# -------------------------------------------------------------------------------------------- msa-predict

def test_predict_names_each_bad_clip_and_scores_the_good_one(bundle: Path, media: dict[str, Path],
                                                             bad_media: dict[str, Path], tmp_path: Path,
                                                             capsys: Any) -> None:
    shutil.copy(media["good2"], tmp_path / "empty_sidecar.mp4")
    (tmp_path / "empty_sidecar.txt").write_text("")
    bad = [bad_media[n] for n in ("empty", "truncated", "text_renamed", "random_bytes", "directory", "missing")]
    bad += [media["bad_audio"], tmp_path / "empty_sidecar.mp4"]
    argv = [*map(str, bad), str(media["good"]), "--bundle", str(bundle), "--signals", "none", "--asr", "fake_asr",
            "--json", "--device", "cpu"]
    res = judge(run_inproc("predict", argv, capsys), names=bad, n_lines=len(bad), prog="msa-predict")
    [line] = res.out.splitlines()  # the good clip is still scored
    assert json.loads(line)["clip"] == str(media["good"])
    text = res.err
    for words in ("empty file", "truncated or corrupt", "not a readable media file", "is a directory",
                  "no such file", "audio cannot be decoded", "is empty"):
        assert words in text, words


def test_predict_needs_the_streams_its_bundle_uses(bundle: Path, media: dict[str, Path], tmp_path: Path,
                                                   capsys: Any) -> None:
    clip = tmp_path / "silent movie.mp4"
    shutil.copy(media["video_only"], clip)
    (tmp_path / "silent movie.txt").write_text("words from a sidecar")
    argv = [str(clip), "--bundle", str(bundle), "--signals", "none", "--asr", "fake_asr", "--device", "cpu"]
    judge(run_inproc("predict", argv, capsys), names=[clip], reason="audio", prog="msa-predict")
    res = judge(run_inproc("predict", [str(media["short"]), *argv[1:], "--json"], capsys), ok=True)
    assert json.loads(res.out)["transcript_source"] == "asr:fake_asr"


def test_predict_unreadable_clip_and_transcript(bundle: Path, media: dict[str, Path], tmp_path: Path) -> None:
    if not permissions_enforced(tmp_path):
        pytest.skip("cannot run a child without CAP_DAC_OVERRIDE here (no CAP_SETPCAP)")
    locked, talk, sidecar = tmp_path / "locked.mp4", tmp_path / "talk.mp4", tmp_path / "talk.txt"
    for p in (locked, talk):
        shutil.copy(media["good"], p)
    sidecar.write_text("hello")
    for p in (locked, sidecar):
        p.chmod(0)
    try:
        res = run_sub(fake_argv("predict", locked, talk, media["good2"], "--bundle", bundle, "--signals", "none",
                                "--asr", "fake_asr", "--device", "cpu", "--json"), preexec=drop_dac_caps)
    finally:
        for p in (locked, sidecar):
            p.chmod(0o644)
    judge(res, names=[locked, sidecar], reason=["permission denied", "Permission denied"], n_lines=2,
          prog="msa-predict")
    assert json.loads(res.out)["clip"] == str(media["good2"])


# ------------------------------------------------------------------- the real default recipe on edge clips

@pytest.mark.slow
def test_real_extractors_on_edge_clips_fail_typed_or_succeed(media: dict[str, Path], tmp_path: Path) -> None:
    """The installed console script and the real default extractors (MiniLM, eGeMAPS, FaceMesh AUs):
    a 0.2 s clip, audio-only, video-only and a corrupt audio stream give features or a typed reason,
    never an extractor crash. Transcripts come from label.csv, so ASR never loads."""
    root = tmp_path / "ds"
    rows = ["video_id,clip_id,text,label,mode"]
    for i, name in enumerate(("good", "short", "audio_only", "video_only", "bad_audio")):
        dest = root / "Raw" / "v" / f"{name}{media[name].suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(media[name], dest)
        rows.append(f"v,{name},clip number {i},{i - 2}.0,train")
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    exe = Path(sys.executable).with_name("msa-extract")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "msa.pipeline.cli.extract"]
    res = judge(run_sub([*cmd, str(root), "--out", str(tmp_path / "out"), "--missing", "empty", "--quiet"],
                        timeout=600), ok=True)
    assert errors(tmp_path / "out") == {"bad_audio": ("decode", "corrupt_media")}, res.err
    d = load_pickle(tmp_path / "out" / "features.pkl")["train"]
    ids = [i.split("$_$")[1] for i in d["id"]]
    assert ids == ["good", "short", "audio_only", "video_only"]
    lengths = dict(zip(ids, zip(d["audio_lengths"], d["vision_lengths"], strict=True), strict=True))
    assert lengths["audio_only"][1] == 0 and lengths["video_only"][0] == 0
    assert lengths["short"][0] > 0 and lengths["short"][1] > 0
    for key in ("text", "audio", "vision"):
        assert np.isfinite(d[key]).all(), key
    assert load_pickle(tmp_path / "out" / "features.pkl")["config"]["specs"]["vision"]["name"] == "facemesh_au"
