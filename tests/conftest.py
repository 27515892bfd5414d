"""Shared fixtures: media generated with ffmpeg's lavfi sources, and the optional real data.

Every clip is generated once per test session into a temporary folder (cached by its parameters)
and must be treated as read-only. Video is ``testsrc2`` (moving colour pattern, no face), audio a
sine tone. Fixtures:

- ``make_clip(duration=2.0, fps=25, size=(160, 120), audio=True, video=True, ext="mp4",
  vcodec=None, acodec=None, tone_hz=440.0, sample_rate=44100, channels=1, rotation=0, vfr=False,
  audio_offset=0.0) -> Path``: factory; codecs default by extension (mp4/mov/mkv: H.264 + AAC,
  avi: MPEG-4 + MP3, mpg: MPEG-1 + MP2, webm: VP9 + Opus; wav/flac/aiff/mp3/m4a/ogg: audio only).
  ``rotation`` stores display-matrix rotation metadata; ``vfr`` keeps the first second at ``fps``
  then every third frame (variable frame rate, nominal ``fps``); ``audio_offset`` starts the audio
  stream that many seconds late.
- ``av_clip``: 2 s, 25 fps, 160x120, 440 Hz tone, .mp4.  ``video_only_clip``: same without audio.
- ``tone_wav``: 2 s 440 Hz tone, 16 kHz mono .wav.  ``audio_only_clips``: {"wav", "flac", "aiff",
  "mp3": Path}, 1.5 s 440 Hz tone, 44.1 kHz (stereo for flac).
- ``clip_120fps`` (1 s), ``hevc_mov`` (2 s, libx265 in .mov; skips when the ffmpeg lacks it),
  ``mpeg1_mpg`` (2 s, MPEG-1 + MP2 .mpg), ``vfr_clip`` (3 s, nominal 30 fps), ``rotated_clip``
  (1 s, 160x120 stored, rotated 90 degrees: displays 120x160).
- ``bad_media``: {"empty", "text_renamed", "truncated", "random_bytes", "directory", "missing":
  Path} for error-path tests ("truncated" is the first third of a faststart mp4).
- ``shared_data``: Path to ``../shared/data`` beside the repository; skips the test when absent.
- ``ffmpeg_exe``: path of the static ffmpeg binary used for all of the above.
- ``one_torch_thread``: torch runs on one thread for the test (reproducible sums, no oversubscription);
  model tests opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
"""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from msa.pipeline.extract.media import ffmpeg_exe as _ffmpeg_exe

REPO_ROOT = Path(__file__).resolve().parents[1]
GEN_TIMEOUT_S = 120
_CODECS = {  # extension -> (video codec, audio codec)
    "mp4": ("libx264", "aac"), "mov": ("libx264", "aac"), "mkv": ("libx264", "aac"),
    "avi": ("mpeg4", "libmp3lame"), "mpg": ("mpeg1video", "mp2"), "webm": ("libvpx-vp9", "libopus"),
    "wav": (None, "pcm_s16le"), "flac": (None, "flac"), "aiff": (None, "pcm_s16be"),
    "mp3": (None, "libmp3lame"), "m4a": (None, "aac"), "ogg": (None, "libvorbis"),
}
_FAST = {"libx264": ["-preset", "ultrafast", "-pix_fmt", "yuv420p"],
         "libx265": ["-preset", "ultrafast", "-pix_fmt", "yuv420p", "-tag:v", "hvc1",
                     "-x265-params", "log-level=error"],
         "libvpx-vp9": ["-deadline", "realtime", "-cpu-used", "8"]}

MakeClip = Callable[..., Path]


def _ffmpeg(*args: str) -> None:
    subprocess.run([_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, timeout=GEN_TIMEOUT_S, capture_output=True)


def _has_encoder(name: str) -> bool:
    out = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                         timeout=GEN_TIMEOUT_S, check=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def _generate(out: Path, *, duration: float, fps: float, size: tuple[int, int], audio: bool, video: bool,
              ext: str, vcodec: str | None, acodec: str | None, tone_hz: float, sample_rate: int,
              channels: int, rotation: int, vfr: bool, audio_offset: float) -> None:
    default_v, default_a = _CODECS[ext]
    video = video and default_v is not None
    vcodec, acodec = vcodec or default_v, acodec or default_a
    args: list[str] = []
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}:duration={duration}"]
    if audio:
        if audio_offset:
            args += ["-itsoffset", str(audio_offset)]
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate={sample_rate}:duration={duration}"]
    if video:
        args += ["-c:v", vcodec, *_FAST.get(vcodec or "", [])]
        if vfr:
            args += ["-vf", "select='lt(t\\,1)+not(mod(n\\,3))'", "-fps_mode", "vfr"]
    if audio:
        args += ["-c:a", acodec, "-ac", str(channels)]
    if ext in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    if ext == "mpg":
        args += ["-f", "mpeg"]
    if not rotation:
        _ffmpeg(*args, str(out))
        return
    plain = out.with_name(f"norot_{out.name}")
    _ffmpeg(*args, str(plain))
    _ffmpeg("-display_rotation", str(rotation), "-i", str(plain), "-c", "copy", str(out))


@pytest.fixture
def fresh_python() -> Callable[[str], str]:
    """Run code in a new interpreter (so imports start from nothing); its stdout, after asserting exit 0."""
    def run(code: str) -> str:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    return run


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    return _ffmpeg_exe()


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory: pytest.TempPathFactory) -> MakeClip:
    folder = tmp_path_factory.mktemp("media")
    made: dict[tuple, Path] = {}

    def make(duration: float = 2.0, fps: float = 25, size: tuple[int, int] = (160, 120), audio: bool = True,
             video: bool = True, ext: str = "mp4", vcodec: str | None = None, acodec: str | None = None,
             tone_hz: float = 440.0, sample_rate: int = 44100, channels: int = 1, rotation: int = 0,
             vfr: bool = False, audio_offset: float = 0.0) -> Path:
        params = dict(duration=duration, fps=fps, size=tuple(size), audio=audio, video=video, ext=ext,
                      vcodec=vcodec, acodec=acodec, tone_hz=tone_hz, sample_rate=sample_rate,
                      channels=channels, rotation=rotation, vfr=vfr, audio_offset=audio_offset)
        key = tuple(sorted(params.items()))
        if key not in made:
            if not audio and (not video or _CODECS[ext][0] is None):
                raise ValueError(f"make_clip: nothing to generate for {params}")
            out = folder / f"clip{len(made):03d}.{ext}"
            _generate(out, **params)  # type: ignore[arg-type]
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def av_clip(make_clip: MakeClip) -> Path:
    return make_clip()


@pytest.fixture(scope="session")
def video_only_clip(make_clip: MakeClip) -> Path:
    return make_clip(audio=False)


@pytest.fixture(scope="session")
def tone_wav(make_clip: MakeClip) -> Path:
    return make_clip(video=False, ext="wav", sample_rate=16000)


@pytest.fixture(scope="session")
def audio_only_clips(make_clip: MakeClip) -> dict[str, Path]:
    return {ext: make_clip(duration=1.5, video=False, ext=ext, channels=2 if ext == "flac" else 1)
            for ext in ("wav", "flac", "aiff", "mp3")}


@pytest.fixture(scope="session")
def clip_120fps(make_clip: MakeClip) -> Path:
    return make_clip(duration=1.0, fps=120, size=(96, 64))


@pytest.fixture(scope="session")
def hevc_mov(make_clip: MakeClip) -> Path:
    if not _has_encoder("libx265"):
        pytest.skip("this ffmpeg build has no libx265 encoder")
    return make_clip(ext="mov", vcodec="libx265", size=(128, 96))


@pytest.fixture(scope="session")
def mpeg1_mpg(make_clip: MakeClip) -> Path:
    return make_clip(ext="mpg", size=(176, 144))


@pytest.fixture(scope="session")
def vfr_clip(make_clip: MakeClip) -> Path:
    return make_clip(duration=3.0, fps=30, audio=False, vfr=True)


@pytest.fixture(scope="session")
def rotated_clip(make_clip: MakeClip) -> Path:
    return make_clip(duration=1.0, audio=False, rotation=90)


@pytest.fixture(scope="session")
def bad_media(tmp_path_factory: pytest.TempPathFactory, av_clip: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_media")
    paths = {name: folder / f"{name}.mp4" for name in
             ("empty", "text_renamed", "truncated", "random_bytes", "directory", "missing")}
    paths["empty"].write_bytes(b"")
    paths["text_renamed"].write_text("this is a text file, not a video\n" * 20)
    data = av_clip.read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 3])
    paths["random_bytes"].write_bytes(random.Random(0).randbytes(50_000))
    paths["directory"].mkdir()
    return paths


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real clips, audio and transcripts of ``../shared/data`` (see its SOURCES.md)."""
    path = (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent")
    return path
