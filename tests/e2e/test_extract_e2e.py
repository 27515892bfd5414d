"""msa-extract end to end with the real default recipe, through the installed CLI (subprocesses).

A generated MMSA dataset (label.csv + Raw/): three 1-s clips (one per split), a corrupt file and
a clip without audio. Transcripts come from label.csv, so ASR must never load. Checks the MMSA
schema (and MMSA's own reads, re-implemented below), errors.jsonl, cache hits on a rerun and after
a rename, a config change re-extracting only its extractor, and that a SIGKILLed run resumes to
byte-identical output.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from msa.pipeline.train.data import load_features

TIMEOUT_S = 400
ROWS = [  # video_id, clip_id, text, label, T, A, V, annotation, mode, kind
    ("v1", "c1", "i really loved this movie", 2.4, 2, 3, 2, "Positive", "train", "good"),
    ("v1", "c2", "it was fine", 0.2, 0, 0.4, 0, "Neutral", "valid", "good2"),
    ("v2", "c1", "what a waste of time", -1.8, -2, -1, -2, "Negative", "test", "good3"),
    ("v2", "c2", "broken file", 0.0, 0, 0, 0, "Neutral", "train", "corrupt"),
    ("v3", "c1", "no sound here", 1.0, 1, 1, 1, "Positive", "train", "silent"),
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "msa.pipeline.cli.extract", *args, "--quiet"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=ENV)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def write_dataset(root: Path, make_clip: Any) -> Path:
    media = {
        "good": make_clip(duration=1.0, fps=10, size=(96, 72)),
        "good2": make_clip(duration=1.2, fps=10, size=(96, 72), tone_hz=330.0),
        "good3": make_clip(duration=1.0, fps=10, size=(96, 72), tone_hz=880.0),
        "silent": make_clip(duration=1.0, fps=10, size=(96, 72), audio=False),
    }
    lines = ["video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"]
    for vid, cid, text, label, t, a, v, ann, mode, kind in ROWS:
        dest = root / "Raw" / vid / f"{cid}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if kind == "corrupt":
            dest.write_bytes(media["good"].read_bytes()[:3000])  # header only: truncated
        else:
            shutil.copy(media[kind], dest)
        lines.append(f"{vid},{cid},{text},{label},{t},{a},{v},{ann},{mode}")
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, make_clip: Any) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds"), make_clip)


@pytest.fixture(scope="module")
def first_run_proc(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("feats")
    return out, cli(str(dataset), "--out", str(out))


@pytest.fixture(scope="module")
def first_run(first_run_proc: tuple[Path, Any]) -> Path:
    return first_run_proc[0]


def test_quiet_run_prints_only_its_own_lines(first_run_proc: tuple[Path, Any]) -> None:
    """--quiet: no progress, and none of MediaPipe/TFLite's native log lines (they write to fd 2)."""
    _, proc = first_run_proc
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith("msa-extract") for ln in lines), lines


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def cache_files(out: Path, extractor: str) -> set[Path]:
    return set((out / "cache" / extractor).glob("*/*.pkl"))


def mmsa_reads(path: Path, mode: str, use_bert: bool, sims: bool, aligned: bool = False) -> dict[str, Any]:
    """What thuiar/MMSA's MMDataset.__init_mosi reads from a features pickle, step by step."""
    with open(path, "rb") as f:
        data = pickle.load(f)
    d = data[mode]
    out: dict[str, Any] = {
        "text": d["text_bert" if use_bert else "text"].astype(np.float32),
        "vision": d["vision"].astype(np.float32),
        "audio": d["audio"].astype(np.float32),
        "raw_text": d["raw_text"],
        "ids": d["id"],
        "labels": {"M": np.array(d["regression_labels"]).astype(np.float32)},
    }
    if sims:  # the key MMSA-FET writes and MMSA's SIMS files carry (see docs/extract.md)
        for m in "TAV":
            out["labels"][m] = d["regression_labels_" + m].astype(np.float32)
    if not aligned:
        out["audio_lengths"], out["vision_lengths"] = d["audio_lengths"], d["vision_lengths"]
    out["audio"][out["audio"] == -np.inf] = 0
    # need_normalized: mean over time, NaN -> 0
    out["vision_mean"] = np.nan_to_num(out["vision"].mean(axis=1, keepdims=True))
    out["seq_len"] = (out["text"].shape[2] if use_bert else out["text"].shape[1], out["audio"].shape[1],
                      out["vision"].shape[1])
    out["feature_dim"] = (out["text"].shape[2], out["audio"].shape[2], out["vision"].shape[2])
    return out


def test_schema_dtypes_lengths_and_errors(first_run: Path) -> None:
    with open(first_run / "features.pkl", "rb") as f:
        data = pickle.load(f)
    assert set(data) == {"train", "valid", "test", "config"}
    expect_ids = {"train": ["v1$_$c1"], "valid": ["v1$_$c2"], "test": ["v2$_$c1"]}
    for mode, ids in expect_ids.items():
        d = data[mode]
        assert list(d["id"]) == ids
        row = next(r for r in ROWS if f"{r[0]}$_${r[1]}" == ids[0])
        assert list(d["raw_text"]) == [row[2]] and list(d["annotations"]) == [row[7]]
        assert d["regression_labels"].dtype == np.float32 and d["regression_labels"][0] == np.float32(row[3])
        assert [d[f"regression_labels_{m}"][0] for m in "TAV"] == [np.float32(x) for x in row[4:7]]
        for key in ("text", "text_bert", "audio", "vision"):
            assert d[key].dtype == np.float32 and d[key].ndim == 3, key
        n, L, Dt = d["text"].shape
        assert d["text_bert"].shape == (n, 3, L)
        assert Dt == 384  # MiniLM
        assert d["audio"].shape[2] == 25 and d["vision"].shape[2] == data["config"]["specs"]["vision"]["dim"]
        for key, lengths in (("text", d["text_lengths"]), ("audio", d["audio_lengths"]),
                             ("vision", d["vision_lengths"])):
            assert lengths.dtype == np.int64 and (lengths >= 1).all() and (lengths <= d[key].shape[1]).all()
            for i, n_i in enumerate(lengths):
                assert not d[key][i, n_i:].any(), f"{key} padding must be zero"
        ids_row = d["text_bert"][0, 0, : d["text_lengths"][0]]
        assert ids_row[0] == 101 and ids_row[-1] == 102  # [CLS] ... [SEP]
        assert np.array_equal(d["text_bert"][0, 1], (np.arange(L) < d["text_lengths"][0]).astype(np.float32))
    # audio at 100 frames/s, vision at 10 frames/s: the 1.2 s clip is the longest
    assert data["valid"]["audio_lengths"][0] > data["train"]["audio_lengths"][0]
    assert data["valid"]["vision_lengths"][0] == 12 and data["train"]["vision_lengths"][0] == 10
    assert data["train"]["flags"][0] == "no_face"  # generated test pattern: no face, kept and flagged
    config = data["config"]
    assert set(config["specs"]) == {"text", "audio", "vision"}
    assert {k: v["name"] for k, v in config["specs"].items()} == {"text": "minilm", "audio": "egemaps",
                                                                 "vision": "facemesh_au"}
    assert all(len(v["spec_hash"]) == 16 for v in config["specs"].values())
    from msa.extractors.text import MiniLMText

    assert config["text_vocab"] == MiniLMText().vocabulary()  # the ids' vocabulary, checked at training (issue 15.3)
    assert config["asr"] is None and not (first_run / "cache" / "whisper").exists()  # ASR never ran
    errs = {e["id"]: e for e in map(json.loads, (first_run / "errors.jsonl").read_text().splitlines())}
    assert set(errs) == {"v2$_$c2", "v3$_$c1"}
    # a truncated faststart mp4 still probes (its header is intact); its streams fail to decode
    assert (errs["v2$_$c2"]["stage"], errs["v2$_$c2"]["reason"]) == ("decode", "corrupt_media")
    assert errs["v2$_$c2"]["path"].endswith("Raw/v2/c2.mp4")
    assert errs["v3$_$c1"]["reason"] == "no_audio"
    s = summary(first_run)
    assert s["clips"] == {"ok": 3, "extracted": 3, "cached": 0, "failed": 2}
    assert s["rtf"] > 0 and set(s["stage_seconds"]) >= {"hash", "probe", "decode", "text", "audio", "visual"}


def test_loads_in_mmsa_reader_and_in_ours(first_run: Path) -> None:
    import torch
    from torch.utils.data import default_collate

    path = first_run / "features.pkl"
    for use_bert in (False, True):
        reads = {mode: mmsa_reads(path, mode, use_bert, sims=True) for mode in ("train", "valid", "test")}
        for mode, r in reads.items():
            assert r["feature_dim"] == reads["train"]["feature_dim"]
            sample = {"text": torch.Tensor(r["text"][0]), "audio": torch.Tensor(r["audio"][0]),
                      "vision": torch.Tensor(r["vision"][0]), "id": r["ids"][0], "raw_text": r["raw_text"][0],
                      "labels": {k: torch.Tensor(v[0].reshape(-1)) for k, v in r["labels"].items()},
                      "audio_lengths": r["audio_lengths"][0], "vision_lengths": r["vision_lengths"][0]}
            batch = default_collate([sample, sample])
            assert batch["labels"]["M"].shape == (2, 1) and batch["audio_lengths"].dtype == torch.int64
            if use_bert:  # MMSA's BertTextEncoder: ids, mask, segments from the (B, 3, L) float tensor
                ids = batch["text"][:, 0, :].long()
                assert torch.equal(ids[0].float(), batch["text"][0, 0])
                assert batch["text"][:, 1, :].sum().item() > 0
    fs = load_features(path)  # the trainer's loader: validates and finds the spec stamp
    assert fs.sizes() == {"train": 1, "valid": 1, "test": 1}
    assert fs.specs["vision"]["name"] == "facemesh_au" and fs.has("T")


def test_rerun_rename_and_config_change(first_run: Path, dataset: Path) -> None:
    out = first_run
    before = (out / "features.pkl").read_bytes()
    cli(str(dataset), "--out", str(out))
    assert summary(out)["clips"] == {"ok": 3, "extracted": 0, "cached": 3, "failed": 2}
    assert (out / "features.pkl").read_bytes() == before
    (dataset / "Raw" / "v1" / "c1.mp4").rename(dataset / "Raw" / "v1" / "c9.mp4")
    csv = dataset / "label.csv"
    csv.write_text(csv.read_text().replace("v1,c1,", "v1,c9,"))
    try:
        cli(str(dataset), "--out", str(out))
        assert summary(out)["clips"]["extracted"] == 0
        with open(out / "features.pkl", "rb") as f:
            assert list(pickle.load(f)["train"]["id"]) == ["v1$_$c9"]
    finally:
        (dataset / "Raw" / "v1" / "c9.mp4").rename(dataset / "Raw" / "v1" / "c1.mp4")
        csv.write_text(csv.read_text().replace("v1,c9,", "v1,c1,"))
    text, audio, visual = (cache_files(out, n) for n in ("minilm", "egemaps", "facemesh_au"))
    cli(str(dataset), "--out", str(out), "--set", "visual.fps=5")
    assert cache_files(out, "minilm") == text and cache_files(out, "egemaps") == audio
    assert len(cache_files(out, "facemesh_au") - visual) == 3  # a new spec folder, one file per clip
    s = summary(out)
    assert s["clips"]["extracted"] == 3 and "text" not in s["stage_seconds"] and "audio" not in s["stage_seconds"]
    with open(out / "features.pkl", "rb") as f:
        assert pickle.load(f)["valid"]["vision_lengths"][0] == 6  # 1.2 s at 5 fps


def test_sigkill_midway_then_rerun_equals_an_uninterrupted_run(first_run: Path, dataset: Path,
                                                                 tmp_path: Path) -> None:
    cli(str(dataset), "--out", str(first_run))  # the uninterrupted run's output (default config, from cache)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "msa.pipeline.cli.extract", str(dataset), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not cache_files(out, "facemesh_au") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)  # visual is the last stage: one file = one fully cached clip
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(cache_files(out, "facemesh_au")) < 3 and not (out / "features.pkl").exists()  # killed midway
    cli(str(dataset), "--out", str(out))
    assert summary(out)["clips"]["cached"] >= 1
    assert (out / "features.pkl").read_bytes() == (first_run / "features.pkl").read_bytes()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_default_recipe_with_given_transcripts_never_imports_torch(dataset: Path, tmp_path: Path, jobs: str) -> None:
    """MiniLM runs on the numpy encoder and openSMILE without its pandas layer: with transcripts given (no
    ASR), extraction imports neither torch nor transformers nor pandas, in the main process or a worker."""
    code = (
        "import os, sys\n"
        "from msa.pipeline.cli.extract import main\n"
        "import msa.pipeline.extract.stages as stages\n"
        "run_clip = stages.run_clip\n"
        "def traced(*a, **k):\n"  # fork workers inherit this wrapper: each reports its own modules
        "    rec = run_clip(*a, **k)\n"
        "    heavy = sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules)\n"
        "    with open(sys.argv[1], 'a') as f: f.write(f'{os.getpid()} {heavy}\\n')\n"
        "    return rec\n"
        "stages.run_clip = traced\n"
        "import msa.pipeline.extract.runner as runner; runner.run_clip = traced\n"
        "rc = main(sys.argv[2:])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules)\n"
        "print(rc, heavy)\n"
    )
    log = tmp_path / "modules.log"
    proc = subprocess.run([sys.executable, "-c", code, str(log), str(dataset), "--out", str(tmp_path / "out"),
                           "--quiet", "--jobs", jobs], capture_output=True, text=True, timeout=TIMEOUT_S, env=ENV)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr[-2000:]
    lines = log.read_text().splitlines()
    assert len(lines) >= len(ROWS) and all(line.endswith(" []") for line in lines), lines
    assert summary(tmp_path / "out")["clips"]["extracted"] == 3  # the corrupt and the silent clip fail
