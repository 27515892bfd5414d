"""End to end in Mandarin: zh_short.flac (砸自己的脚) over a face photo through msa-predict with the shipped
bilingual default bundle: Chinese transcript in simplified characters, ``language`` zh, a plot with the words."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from msa.pipeline.extract.media import ffmpeg_exe
from msa.pipeline.serve.demo import make_example_clip




@pytest.fixture(scope="module")
def zh_clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1 s sentence with 0.5 s of silence before and 1.5 s after (a clip shorter than its video would
    be flagged as truncated audio), looped under matplotlib's face photo."""
    folder = tmp_path_factory.mktemp("zh")
    wav = folder / "zh_padded.wav"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(shared_data / "audio" / "zh_short.flac"),
                    "-af", "adelay=500,apad=pad_dur=1.5", "-ar", "16000", str(wav)], check=True, timeout=120)
    return make_example_clip(folder / "zh.mp4", speech=wav)


@pytest.mark.realdata
@pytest.mark.slow
def test_predict_chinese_clip(zh_clip: Path, tmp_path: Path) -> None:
    plot = tmp_path / "zh.png"
    r = subprocess.run([sys.executable, "-m", "msa.pipeline.cli.predict", str(zh_clip), "--json", "--plot", str(plot)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["language"] == "zh" and out["transcript_source"] == "asr:whisper"
    assert "自己的脚" in out["transcript"]
    assert -3.0 <= out["score"] <= 3.0 and out["label"] in ("negative", "neutral", "positive")
    assert out["plot"] == str(plot) and plot.is_file() and plot.stat().st_size > 10_000


def test_plot_has_a_cjk_font() -> None:
    from matplotlib import font_manager

    from msa.pipeline.serve.plot import text_families

    families = text_families()
    assert len(families) == 2, "no CJK font found: Chinese words would be drawn as boxes"
    path = font_manager.findfont(font_manager.FontProperties(family=families[1]), fallback_to_default=False)
    from matplotlib.ft2font import FT2Font

    font = FT2Font(path)
    assert all(font.get_char_index(ord(c)) for c in "砸自己的脚")
