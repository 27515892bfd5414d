"""Fixtures of the fault suite: generated edge-case media, a tiny trained bundle, and the end-of-run tally.

Media come from ``tests/conftest.py``'s ``make_clip`` (lavfi); the fake extractors of
``tests/pipeline/extract_fakes.py`` are registered so the real CLIs run without models wherever a
case is about the runner rather than an extractor.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import faultkit
from faultkit import TALLY, extract_args

faultkit.register()


@pytest.fixture(scope="session")
def media(make_clip: Any, ffmpeg_exe: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and edge-case clips (read-only; copy before changing them)."""
    clips = {
        "good": make_clip(duration=1.0, fps=10, size=(64, 48)),
        "good2": make_clip(duration=1.2, fps=10, size=(64, 48), tone_hz=660.0),
        "short": make_clip(duration=0.2, fps=10, size=(64, 48)),
        "audio_only": make_clip(duration=1.0, video=False, ext="wav", sample_rate=16000),
        "video_only": make_clip(duration=1.0, fps=10, size=(64, 48), audio=False),
    }
    folder = tmp_path_factory.mktemp("fault_media")
    source = make_clip(duration=2.0, fps=10, size=(64, 48))
    bad_audio = folder / "bad_audio.mp4"  # the AAC packets scrambled by ffmpeg's (deterministic) noise filter
    subprocess.run([ffmpeg_exe, "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c", "copy",
                    "-bsf:a", "noise=amount=4", "-fflags", "+bitexact", str(bad_audio)],
                   check=True, timeout=120, capture_output=True)
    clips["bad_audio"] = bad_audio
    return clips


@pytest.fixture(scope="session")
def features(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """features.pkl written by msa-extract (fake extractors) for a 9-clip train/valid/test dataset."""
    from msa.pipeline.cli import extract

    root = tmp_path_factory.mktemp("bundle_ds")
    lines = ["video_id,clip_id,text,label,annotation,mode"]
    modes = ["train"] * 5 + ["valid"] * 2 + ["test"] * 2
    for i, mode in enumerate(modes):
        dest = root / "Raw" / "v" / f"c{i}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(media["good"].read_bytes() + bytes(i + 1))  # distinct content, same media
        lines.append(f"v,c{i},{('good', 'bad', 'fine')[i % 3]} movie {i},{i % 7 - 3}.0,x,{mode}")
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    feats = tmp_path_factory.mktemp("bundle_feats")
    assert extract.main(extract_args(root, feats)) == 0
    return feats / "features.pkl"


@pytest.fixture(scope="session")
def bundle(features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TFN (tiny) bundle trained one epoch by msa-train on ``features``."""
    import torch

    from msa.pipeline.cli import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("bundle_run")
    assert train.main(["--data", str(features), "--dataset", "mosi", "--model", "tfn", "--preset", "tiny",
                       "--out", str(run), "--epochs", "1", "--device", "cpu", "--quiet", "--overwrite"]) == 0
    return run


@pytest.fixture
def copy_bundle(bundle: Path, tmp_path: Path):
    def make(name: str = "b") -> Path:
        dst = tmp_path / name
        shutil.copytree(bundle, dst)
        return dst
    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    t = TALLY
    terminalreporter.write_line(
        f"fault suite: {t['cli_runs']} CLI runs judged ({t['error_runs']} error exits, "
        f"{t['interrupted_runs']} interrupted), "
        f"{t['tracebacks']} with a traceback; finished cache entries checked after a fault: "
        f"{t['finished_entries_checked']}, lost: {t['finished_entries_lost']}")
