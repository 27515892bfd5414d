"""Memory stays bounded on a long clip: frames are streamed, never the whole video in memory.

A 150 s 320x240 25 fps clip decodes to 864 MiB of RGB frames. Peak RSS (the process and its ffmpeg
children, from ``os.wait4``) of a child process on it is compared with the same work on a 10 s clip;
the difference must stay far below what holding the video would cost. The 30-minute figure comes
from ``bench/long_clip.py`` (docs/reliability.md).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from faultkit import extract_args, fake_argv, judge, load_pickle, peak_rss_mib

pytestmark = pytest.mark.slow
SIZE, FPS, LONG_S, SHORT_S = (320, 240), 25, 150.0, 10.0
VIDEO_MIB = LONG_S * FPS * SIZE[0] * SIZE[1] * 3 / 2**20  # 864 MiB if the frames were kept
MEDIA_BOUND_MIB = 40  # streaming: one 32-frame batch is 7 MiB
# msa-extract holds a clip's 16 kHz waveform whole (by design, 64 KiB per second) and the fake audio
# extractor makes float64 copies of it: about 0.3 MiB per second of audio over the 140 s difference
EXTRACT_BOUND_MIB = 100

DECODE = """
import sys
from msa.pipeline.extract.media import iter_frames, probe
info = probe(sys.argv[1])
n = sum(len(b) for b in iter_frames(sys.argv[1], info=info))
assert n == info.n_frames, (n, info.n_frames)
print(n)
"""


@pytest.fixture(scope="module")
def clips(make_clip: Any) -> dict[str, Path]:
    return {"short": make_clip(duration=SHORT_S, fps=FPS, size=SIZE),
            "long": make_clip(duration=LONG_S, fps=FPS, size=SIZE)}


def test_media_layer_streams_frames(clips: dict[str, Path]) -> None:
    rss = {}
    for name, path in clips.items():
        res, rss[name] = peak_rss_mib([sys.executable, "-c", DECODE, str(path)])
        judge(res, ok=True)
        assert int(res.out) == round((LONG_S if name == "long" else SHORT_S) * FPS)
    print("media peak RSS MiB", rss)
    assert rss["long"] - rss["short"] < MEDIA_BOUND_MIB, (rss, VIDEO_MIB)


def test_extraction_memory_does_not_grow_with_the_video(clips: dict[str, Path], tmp_path: Path) -> None:
    """msa-extract with every native-size frame passing through Python (a full-frame visual extractor)."""
    rss = {}
    for name, path in clips.items():
        out = tmp_path / name
        argv = fake_argv("extract", *extract_args(path, out, "--extractors", "visual:fault_fullframe"))
        res, rss[name] = peak_rss_mib(argv)
        judge(res, ok=True)
        d = load_pickle(out / "features.pkl")["all"]
        assert list(d["vision_lengths"]) == [round((LONG_S if name == "long" else SHORT_S) * FPS)]
    print("extract peak RSS MiB", rss)
    assert rss["long"] - rss["short"] < EXTRACT_BOUND_MIB, (rss, VIDEO_MIB)
