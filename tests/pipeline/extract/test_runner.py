"""The extraction job with small fake extractors: caching, per-clip errors, flags, parallel runs.

The fakes (extract_fakes.py) log every call, so "re-extracts nothing" is checked by counting calls.
The real default recipe runs in tests/e2e/test_extract_e2e.py.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import extract_fakes
from extract_fakes import FAKE_RECIPE, calls
from msa.pipeline.extract.cache import FeatureCache
from msa.pipeline.cli.extract import main
from msa.core.hashing import file_sha256

extract_fakes.register()
FAKES_DIR = Path(__file__).resolve().parents[1]  # tests/pipeline: extract_fakes.py


@pytest.fixture(scope="module")
def clips(make_clip: Any) -> dict[str, Path]:
    return {
        "av": make_clip(duration=1.0, fps=10, size=(64, 48)),
        "av2": make_clip(duration=1.2, fps=10, size=(64, 48), tone_hz=660.0),
        "silent_video": make_clip(duration=1.0, fps=10, size=(64, 48), audio=False),
        "wav": make_clip(duration=0.8, video=False, ext="wav", sample_rate=16000),
    }


def folder(tmp_path: Path, clips: dict[str, Path], names: tuple[str, ...], corrupt: bool = False) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    for n in names:
        shutil.copy(clips[n], root / f"{n}{clips[n].suffix}")
    if corrupt:
        (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 2000)
    return root


def extract(inp: Path, out: Path, log: Path, *extra: str) -> int:
    sets = [f"--set={m}.log={log}" for m in ("text", "audio", "visual")]
    return main([str(inp), "--out", str(out), "--extractors", f"{FAKE_RECIPE},asr:fake_asr",
                 "--set", f"asr.log={log}", *sets, "--quiet", *extra])


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def errors(out: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


def load(out: Path) -> dict[str, Any]:
    with open(out / "features.pkl", "rb") as f:
        return pickle.load(f)


def test_folder_run_errors_flags_and_a_rerun_that_extracts_nothing(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "silent_video", "wav"), corrupt=True)
    (inp / "av.txt").write_text("a given transcript")
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(inp, out, log, "--missing", "empty") == 0
    first = sorted(calls(log))
    assert first == sorted(["fake_text av", "fake_audio av", "fake_visual av",
                            "fake_asr wav", "fake_text wav", "fake_audio wav",
                            "fake_text silent_video", "fake_visual silent_video"])
    [err] = errors(out)
    assert err["id"] == "in$_$broken" and err["stage"] == "probe" and err["reason"] == "corrupt_media"
    assert err["path"].endswith("broken.mp4") and "broken.mp4" in err["message"]
    data = load(out)
    split = data["all"]
    assert list(split["id"]) == ["in$_$av", "in$_$silent_video", "in$_$wav"]
    assert list(split["raw_text"]) == ["a given transcript", "", "tone tone"]
    assert list(split["language"]) == ["", "", "xx"]  # the recogniser's language, per clip ("" when not recognised)
    assert list(split["flags"]) == ["no_face", "no_audio,no_speech,no_face", "no_video"]
    assert list(split["audio_lengths"]) == [10, 0, 8] and list(split["vision_lengths"]) == [5, 5, 0]
    assert split["audio"].shape == (3, 10, 3) and split["vision"].shape == (3, 5, 3)
    assert not split["audio"][1].any() and not split["vision"][2].any()  # missing streams stay zero
    assert split["text"].shape == (3, 5, 4) and list(split["text_lengths"]) == [5, 2, 4]
    assert split["text_bert"].shape == (3, 3, 5) and split["text_bert"].dtype == np.float32
    assert list(split["text_bert"][:, 1].sum(axis=1)) == [5, 2, 4]  # attention mask = true lengths
    assert data["config"]["asr"]["name"] == "fake_asr"
    assert data["config"]["specs"]["vision"]["name"] == "fake_visual"
    s = summary(out)
    assert s["clips"] == {"ok": 3, "extracted": 3, "cached": 0, "failed": 1}
    assert s["flags"] == {"no_face": 2, "no_audio": 1, "no_speech": 1, "no_video": 1}
    before = (out / "features.pkl").read_bytes()

    assert extract(inp, out, log, "--missing", "empty") == 0
    assert sorted(calls(log)) == first  # nothing re-extracted, ASR included
    assert summary(out)["clips"] == {"ok": 3, "extracted": 0, "cached": 3, "failed": 1}
    assert (out / "features.pkl").read_bytes() == before
    assert len(errors(out)) == 1  # errors.jsonl describes the latest run, not an accumulation


def test_rename_hits_the_cache_and_config_change_reextracts_one_extractor(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "av2"))
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(inp, out, log) == 0
    n = len(calls(log))
    (inp / "av.mp4").rename(inp / "renamed.mp4")
    assert extract(inp, out, log) == 0
    assert len(calls(log)) == n
    assert "in$_$renamed" in list(load(out)["all"]["id"])
    assert extract(inp, out, log, "--set", "visual.fps=2") == 0
    assert sorted(calls(log)[n:]) == ["fake_visual av2", "fake_visual renamed"]
    assert load(out)["all"]["vision"].shape[1] == 2
    assert summary(out)["stage_seconds"].keys() >= {"visual"} and "audio" not in summary(out)["stage_seconds"]


def test_corrupt_cache_file_is_reextracted_not_trusted(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "av2"))
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(inp, out, log) == 0
    good = load(out)
    n = len(calls(log))
    sha = file_sha256(inp / "av2.mp4")
    [audio_file] = (out / "cache" / "fake_audio").glob(f"*/{sha}.pkl")
    audio_file.write_bytes(audio_file.read_bytes()[:-7])  # truncated
    assert extract(inp, out, log) == 0
    assert calls(log)[n:] == ["fake_audio av2"]
    again = load(out)
    assert np.array_equal(again["all"]["audio"], good["all"]["audio"])


def test_a_disabled_modality_is_left_out(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "wav"))
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert main([str(inp), "--out", str(out), "--extractors", f"{FAKE_RECIPE},asr:fake_asr,visual:none",
                 "--set", f"audio.log={log}", "--quiet"]) == 0
    d = load(out)
    assert "vision" not in d["all"] and set(d["config"]["specs"]) == {"text", "audio"}
    assert sorted(calls(log)) == ["fake_audio av", "fake_audio wav"] and errors(out) == []  # no no_video error


def test_missing_stream_fails_the_clip_by_default(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "silent_video"))
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(inp, out, log) == 0
    [err] = errors(out)
    assert (err["id"], err["stage"], err["reason"]) == ("in$_$silent_video", "probe", "no_audio")
    assert "--missing empty" in err["message"]
    assert list(load(out)["all"]["id"]) == ["in$_$av"]


def test_label_csv_transcripts_never_run_asr_and_labels_flow_through(tmp_path: Path, clips: dict) -> None:
    root = tmp_path / "ds"
    for vid, cid, name in (("v1", "a", "av"), ("v1", "b", "av2"), ("v2", "a", "wav")):
        (root / "Raw" / vid).mkdir(parents=True, exist_ok=True)
        shutil.copy(clips[name], root / "Raw" / vid / f"{cid}{clips[name].suffix}")
    (root / "label.csv").write_text("video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
                                    "v1,a,good movie,2.0,1,2,3,Positive,train\n"
                                    "v1,b,bad movie,-1.5,-1,-2,-3,Negative,train\n"
                                    "v2,a,okay,0.0,0,0,0,Neutral,test\n")
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(root, out, log, "--missing", "empty", "--max-len", "text=3,audio=4") == 0
    assert not any(c.startswith("fake_asr") for c in calls(log))
    data = load(out)
    assert set(data) == {"train", "test", "config"}
    tr = data["train"]
    assert list(tr["id"]) == ["v1$_$a", "v1$_$b"] and list(tr["raw_text"]) == ["good movie", "bad movie"]
    assert tr["regression_labels"].dtype == np.float32 and list(tr["regression_labels"]) == [2.0, -1.5]
    assert list(tr["regression_labels_V"]) == [3.0, -3.0] and list(tr["annotations"]) == ["Positive", "Negative"]
    assert tr["text"].shape[1] == 3 and tr["audio"].shape[1] == 4 and list(tr["audio_lengths"]) == [4, 4]
    assert list(tr["text_lengths"]) == [3, 3]  # truncated to --max-len, lengths say so
    assert data["config"]["max_len"] == {"text": 3, "audio": 4, "vision": 6}  # av2: 1.2 s at 5 fps
    assert data["config"]["asr"] is None
    # the safe export: same arrays and stamp, no pickle inside
    assert extract(root, out, log, "--missing", "empty", "--max-len", "text=3,audio=4", "--format", "npz") == 0
    from msa.pipeline.train.data import load_features

    fs = load_features(out / "features.npz")
    assert fs.sizes() == {"train": 2, "test": 1} and fs.specs["vision"]["name"] == "fake_visual"
    assert np.array_equal(fs.split("train").audio, tr["audio"]) and fs.has("V")
    with np.load(out / "features.npz", allow_pickle=False) as z:
        assert np.array_equal(z["test/text_bert"], data["test"]["text_bert"])


def test_sidecar_problems_and_too_long_are_per_clip_errors(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "av2", "wav", "silent_video"))
    (inp / "av.txt").write_text("   ")
    (inp / "wav.vtt").write_bytes(b"WEBVTT\n\n00:00.000 --> 00:01.000\nna\xefve\xff\n")
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(inp, out, log, "--missing", "empty", "--limit-seconds", "1.1") == 0
    got = {e["id"]: (e["stage"], e["reason"]) for e in errors(out)}
    assert got == {"in$_$av": ("transcript", "empty_transcript"), "in$_$wav": ("transcript", "bad_transcript"),
                   "in$_$av2": ("probe", "too_long")}  # 1.2 s > 1.1 s
    assert list(load(out)["all"]["id"]) == ["in$_$silent_video"]
    assert not any(c.startswith("fake_asr") for c in calls(log))  # a bad sidecar is not replaced by ASR


def test_word_alignment_averages_frames_per_token(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "av2"))
    (inp / "av2.txt").write_text("given text has no word times")
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(inp, out, log, "--align") == 0
    [err] = errors(out)
    assert (err["id"], err["stage"], err["reason"]) == ("in$_$av2", "align", "no_word_timings")
    aligned = load(out)
    assert aligned["config"]["aligned"] is True
    d = aligned["all"]  # av: "tone tone" -> [CLS] tone tone [SEP]; words cover [0, 0.5) and [0.5, 1.0)
    assert d["audio"].shape == (1, 4, 3) and d["vision"].shape == (1, 4, 3)
    assert list(d["audio_lengths"]) == list(d["vision_lengths"]) == list(d["text_lengths"]) == [4]
    assert extract(inp, tmp_path / "plain", log) == 0  # same cache entries, unaligned
    plain = load(tmp_path / "plain")["all"]
    i = list(plain["id"]).index("in$_$av")
    audio, vision = plain["audio"][i], plain["vision"][i]  # fake audio: 10 frames at 0.0..0.9 s; vision 5 at 0.0..0.8
    assert np.allclose(d["audio"][0, 1], audio[:5].mean(axis=0)) and np.allclose(d["audio"][0, 2], audio[5:10].mean(axis=0))
    assert np.allclose(d["vision"][0, 1], vision[:3].mean(axis=0)) and np.allclose(d["vision"][0, 2], vision[3:5].mean(axis=0))
    assert not d["audio"][0, [0, 3]].any()  # special tokens carry no frames
    # a subtitle sidecar times its words (by their share of each cue), so it aligns like ASR's words
    (inp / "av2.txt").unlink()
    (inp / "av2.srt").write_text("1\n00:00:00,000 --> 00:00:00,500\ntone\n\n2\n00:00:00,500 --> 00:00:01,000\ntone\n")
    assert extract(inp, tmp_path / "srt", log, "--align") == 0 and not errors(tmp_path / "srt")
    srt = load(tmp_path / "srt")["all"]
    j = list(srt["id"]).index("in$_$av2")
    assert srt["audio"].shape[1] == 4 and list(srt["audio_lengths"]) == [4, 4]
    frames = plain["audio"][list(plain["id"]).index("in$_$av2")]  # the same clip's frames, unaligned
    assert np.allclose(srt["audio"][j, 1], frames[:5].mean(axis=0)) and np.allclose(srt["audio"][j, 2], frames[5:10].mean(axis=0))


def test_odd_file_names_and_bad_entries_in_a_batch(tmp_path: Path, clips: dict) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("with space.mp4", "ünïcode.mp4", "-dash.mp4"):
        shutil.copy(clips["av"], inp / name)
    (inp / "empty.mp4").write_bytes(b"")
    (inp / "dir.mp4").mkdir()
    (inp / "dangling.mp4").symlink_to(inp / "gone.mp4")
    out, log = tmp_path / "out", tmp_path / "calls.log"
    assert extract(inp, out, log) == 0
    got = {e["id"].split("$_$")[1]: (e["stage"], e["reason"]) for e in errors(out)}
    assert got == {"empty": ("probe", "corrupt_media"), "dir": ("hash", "not_found"),
                   "dangling": ("hash", "not_found")}
    assert sorted(load(out)["all"]["id"]) == ["in$_$-dash", "in$_$with space", "in$_$ünïcode"]
    assert len(calls(log)) == 4  # three names, one content: asr/text/audio/visual ran once


def test_all_clips_failing_is_an_error_and_single_file_failures_exit_nonzero(
        tmp_path: Path, clips: dict, capsys: pytest.CaptureFixture[str]) -> None:
    inp = folder(tmp_path, clips, (), corrupt=True)
    assert extract(inp, tmp_path / "out", tmp_path / "log") == 1
    assert "no clip could be extracted (1 failed)" in capsys.readouterr().err
    assert extract(inp / "broken.mp4", tmp_path / "out2", tmp_path / "log") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("msa-extract: error: ") and "broken.mp4: not a readable media file" in err
    assert err.endswith("[corrupt_media at probe]")


def test_a_bad_label_csv_stops_everything_before_extraction(tmp_path: Path, clips: dict,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    (root / "Raw" / "v").mkdir(parents=True)
    shutil.copy(clips["av"], root / "Raw" / "v" / "1.mp4")
    rows = "".join(f"v,{i},t,{'nan' if i % 2 else 0.5},,train\n" for i in range(1, 16))  # odd: NaN; 2..15: no media
    (root / "label.csv").write_text("video_id,clip_id,text,label,annotation,mode\n" + rows)
    out = tmp_path / "out"
    assert extract(root, out, tmp_path / "log") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "15 problem(s)" in err and "label_errors.txt" in err
    report = (out / "label_errors.txt").read_text().splitlines()
    assert len(report) == 15 and report[0].startswith("line 2: label is not a number")
    assert not (out / "cache").exists() and calls(tmp_path / "log") == []


def test_bad_usage_is_a_one_line_error(tmp_path: Path, clips: dict, capsys: pytest.CaptureFixture[str]) -> None:
    inp = folder(tmp_path, clips, ("av",))
    for extra, msg in ((["--set", "visual.nope=1"], "--set fake_visual: unknown config key 'nope'; valid: fps, log"),
                       (["--set", "visual.fps=fast"], "--set fake_visual: fps = 'fast': expected a number"),
                       (["--extractors", "audio:fake_text"], "fake_text is a text extractor"),
                       (["--extractors", "audio:nope"], "unknown extractor 'nope'"),
                       (["--max-len", "text=0"], "at least 1"),
                       (["--scheduler", "tcp://x:1"], "--scheduler needs --backend dask")):
        assert extract(inp, tmp_path / "out", tmp_path / "log", *extra) == 2, extra
        assert msg in capsys.readouterr().err


def test_clip_claimed_by_another_process_is_waited_for_not_duplicated(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "av2"))
    out, log = tmp_path / "out", tmp_path / "calls.log"
    held = FeatureCache(out).lock(file_sha256(inp / "av.mp4"))
    assert held is not None
    threading.Timer(1.0, held.release).start()  # the "other process" finishes without output
    assert extract(inp, out, log) == 0
    assert sorted(calls(log)) == sorted(f"fake_{m} {c}" for m in ("asr", "text", "audio", "visual") for c in ("av", "av2"))
    assert calls(log)[-1].endswith(" av")  # av2 went first; av was done after the claim was released


def test_parallel_fork_loky_and_dask_match_sequential(tmp_path: Path, clips: dict) -> None:
    from dask.distributed import LocalCluster

    inp = folder(tmp_path, clips, ("av", "av2", "wav"), corrupt=True)
    log = tmp_path / "calls.log"
    assert extract(inp, tmp_path / "seq", log, "--missing", "empty") == 0
    assert extract(inp, tmp_path / "fork", log, "--missing", "empty", "--jobs", "2", "--backend", "fork") == 0
    assert extract(inp, tmp_path / "loky", log, "--missing", "empty", "--jobs", "2", "--backend", "loky") == 0
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        assert extract(inp, tmp_path / "dask", log, "--missing", "empty", "--backend", "dask",
                       "--scheduler", cluster.scheduler_address) == 0
    seq = (tmp_path / "seq" / "features.pkl").read_bytes()
    for name in ("fork", "loky", "dask"):
        assert (tmp_path / name / "features.pkl").read_bytes() == seq, name
        assert errors(tmp_path / name) == errors(tmp_path / "seq")
        assert summary(tmp_path / name)["clips"]["extracted"] == 3
    n = len(calls(log))
    assert extract(inp, tmp_path / "loky", log, "--missing", "empty", "--jobs", "2") == 0
    assert summary(tmp_path / "loky")["clips"]["cached"] == 3 and len(calls(log)) == n


class _WarmProbe(extract_fakes.FakeText):
    """FakeText that records, per clip, which process extracted it and which process ran its preload."""

    name = "warm_probe"
    probe_log = ""  # set by the test; forked workers inherit it
    preloaded_by = 0

    def preload(self) -> None:
        type(self).preloaded_by = os.getpid()

    def extract(self, clip: Any) -> Any:
        with open(self.probe_log, "a") as f:
            f.write(f"{os.getpid()} {type(self).preloaded_by}\n")
        return super().extract(clip)


def test_forked_workers_start_warm(tmp_path: Path, clips: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """--backend fork preloads every extractor once in this process; the workers inherit it (no reload)."""
    from msa.extractors import EXTRACTORS

    if "fork" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no fork on this platform")
    if "warm_probe" not in EXTRACTORS.names():
        EXTRACTORS.register("warm_probe", _WarmProbe)
    monkeypatch.setattr(_WarmProbe, "probe_log", str(tmp_path / "probe.log"))
    monkeypatch.setattr(_WarmProbe, "preloaded_by", 0)
    inp = folder(tmp_path, clips, ("av", "av2", "silent_video"))
    for name in ("av", "av2", "silent_video"):
        (inp / f"{name}.txt").write_text(f"the transcript of {name}")
    assert main([str(inp), "--out", str(tmp_path / "out"), "--extractors", "asr:none,text:warm_probe,audio:none,visual:none",
                 "--quiet", "--jobs", "2", "--backend", "fork"]) == 0
    rows = [line.split() for line in (tmp_path / "probe.log").read_text().splitlines()]
    assert len(rows) == 3
    assert all(int(worker) != os.getpid() and int(preloaded) == os.getpid() for worker, preloaded in rows), rows


def fake_cli(inp: Path, out: Path, log: Path, *extra: str) -> list[str]:
    """argv running the real CLI in a fresh interpreter with the fakes registered."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import extract_fakes; extract_fakes.register()\n"
            "from msa.pipeline.cli.extract import main; sys.exit(main(sys.argv[2:]))\n")
    return [sys.executable, "-c", code, str(FAKES_DIR), str(inp), "--out", str(out), "--missing", "empty",
            "--extractors", f"{FAKE_RECIPE},asr:fake_asr", "--set", f"audio.log={log}", *extra]


def test_two_processes_on_one_output_folder_share_the_work(tmp_path: Path, clips: dict) -> None:
    inp = folder(tmp_path, clips, ("av", "av2", "wav"))
    for i in range(3):
        (inp / f"copy{i}.mp4").write_bytes(clips["av"].read_bytes() + bytes(i + 1))  # distinct content
    out, log = tmp_path / "out", tmp_path / "calls.log"
    argv = fake_cli(inp, out, log, "--set", "audio.sleep=0.3", "--quiet")
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    counts = [re.search(r"(\d+) extracted, (\d+) cached", out) for out, _ in results]
    assert all(counts), results
    extracted, cached = (sum(int(m.group(k)) for m in counts) for k in (1, 2))
    assert (extracted, cached) == (6, 6), results  # each clip reported extracted by exactly one process
    audio_calls = calls(log)
    assert sorted(audio_calls) == sorted(set(audio_calls)) and len(audio_calls) == 6  # no clip extracted twice
    assert len(load(out)["all"]["id"]) == 6 and errors(out) == []
    assert not list((out / "cache").rglob("*.tmp")) and not list((out / "cache" / "locks").iterdir())


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_finishes_the_clip_in_flight_and_the_rerun_resumes(tmp_path: Path, clips: dict, jobs: str) -> None:
    inp = folder(tmp_path, clips, ("av", "av2", "wav"))
    shutil.copy(clips["av"], inp / "av_copy2.mp4")
    (inp / "av_copy2.mp4").write_bytes((inp / "av_copy2.mp4").read_bytes() + b"\0")  # distinct bytes
    out, log = tmp_path / "out", tmp_path / "calls.log"
    argv = fake_cli(inp, out, log, "--set", "audio.sleep=0.6", "--jobs", jobs)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(calls(log)) < 2 and time.monotonic() < deadline:  # second clip's audio is in flight
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Rerun the same command to resume" in stderr and "Traceback" not in stderr
    assert (out / "errors.jsonl").read_text() == ""
    assert not (out / "features.pkl").exists()
    done = len(list((out / "cache" / "fake_audio").glob("*/*.pkl")))
    assert 2 <= done < 4  # the clip in flight was finished and cached, later ones not started
    assert not list((out / "cache").rglob("*.tmp")) and not list((out / "cache").glob(".stop-*"))
    assert subprocess.run(argv, capture_output=True, timeout=120).returncode == 0
    assert len(calls(log)) == 4  # each clip's audio extracted exactly once across both runs
    assert len(load(out)["all"]["id"]) == 4


def test_parallel_runs_start_the_longest_clips_first(tmp_path: Path, clips: dict) -> None:
    """With --jobs, clips are dispatched by probed duration, longest first; the output keeps input order."""
    inp = folder(tmp_path, clips, ("av", "av2"))  # 1.0 s, 1.2 s
    shutil.copy(clips["wav"], inp / "a0.wav")  # 0.8 s, first in input order
    log = tmp_path / "calls.log"
    assert extract(inp, tmp_path / "out", log, "--set", "audio.sleep=0.3", "--jobs", "2", "--missing", "empty") == 0
    audio = [c.split()[1] for c in calls(log) if c.startswith("fake_audio")]
    assert sorted(audio[:2]) == ["av", "av2"] and audio[2] == "a0"
    assert list(load(tmp_path / "out")["all"]["id"]) == ["in$_$a0", "in$_$av", "in$_$av2"]


class _SlowASR(extract_fakes.FakeASR):
    """FakeASR that takes a while and notes when it ran."""

    name = "slow_asr"
    trace = ""  # set by the test

    def transcribe(self, clip: Any) -> Any:
        t0 = time.monotonic()
        time.sleep(0.4)
        with open(self.trace, "a") as f:
            f.write(f"asr {clip.clip_id} {t0} {time.monotonic()} {threading.current_thread().name}\n")
        return super().transcribe(clip)


class _TracedVisual(extract_fakes.FakeVisual):
    """FakeVisual that notes when and on which thread it ran; ``fail`` makes it raise."""

    name = "traced_visual"
    trace = ""
    fail = False

    def extract(self, clip: Any) -> Any:
        t0 = time.monotonic()
        if self.fail:
            raise RuntimeError("the visual model broke")
        feats = super().extract(clip)
        with open(self.trace, "a") as f:
            f.write(f"visual {clip.clip_id} {t0} {time.monotonic()} {threading.current_thread().name}\n")
        return feats


def _traced_run(tmp_path: Path, inp: Path, name: str, cpus: int, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    from msa.extractors import EXTRACTORS

    for cls in (_SlowASR, _TracedVisual):
        if cls.name not in EXTRACTORS.names():
            EXTRACTORS.register(cls.name, cls)
    trace = tmp_path / f"{name}.trace"
    monkeypatch.setattr(_SlowASR, "trace", str(trace))
    monkeypatch.setattr(_TracedVisual, "trace", str(trace))
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    main([str(inp), "--out", str(tmp_path / name), "--quiet", "--extractors",
          "asr:slow_asr,text:fake_text,audio:fake_audio,visual:traced_visual"])
    return [line.split() for line in trace.read_text().splitlines()] if trace.exists() else []


def test_the_visual_stage_runs_beside_the_transcript_when_a_core_is_spare(
        tmp_path: Path, clips: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = folder(tmp_path, clips, ("av", "av2"))
    side = _traced_run(tmp_path, inp, "two_cpus", 2, monkeypatch)
    alone = _traced_run(tmp_path, inp, "one_cpu", 1, monkeypatch)
    for clip in ("av", "av2"):
        (asr,) = [r for r in side if r[:2] == ["asr", clip]]
        (vis,) = [r for r in side if r[:2] == ["visual", clip]]
        assert vis[4].startswith("msa-visual") and asr[4] == "MainThread"
        assert float(vis[2]) < float(asr[3])  # visual began before the transcript was done
    assert {r[4] for r in alone} == {"MainThread"}  # one core: one thread, in order
    assert (tmp_path / "two_cpus" / "features.pkl").read_bytes() == (tmp_path / "one_cpu" / "features.pkl").read_bytes()
    assert summary(tmp_path / "two_cpus")["stage_seconds"]["visual"] < 0.4 * 2  # its own time, not the wait


def test_a_visual_error_beside_the_transcript_fails_the_clip_at_the_visual_stage(
        tmp_path: Path, clips: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = folder(tmp_path, clips, ("av",))
    monkeypatch.setattr(_TracedVisual, "fail", True)
    _traced_run(tmp_path, inp, "out", 2, monkeypatch)
    (err,) = errors(tmp_path / "out")
    assert (err["stage"], err["reason"]) == ("visual", "extractor_crash") and "visual model broke" in err["message"]
    monkeypatch.setattr(_TracedVisual, "fail", False)
    (tmp_path / "out.trace").unlink()
    rows = _traced_run(tmp_path, inp, "out", 2, monkeypatch)
    assert [r[0] for r in rows] == ["visual"]  # the transcript was kept: ASR did not run again
