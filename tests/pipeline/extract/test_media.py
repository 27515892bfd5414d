"""Media layer: probing, in-memory audio and frame decoding, typed errors, bounded memory, real clips."""
from __future__ import annotations

import gc
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from msa.pipeline.extract import media
from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import MediaError, UsageError
from msa.pipeline.extract.media import iter_frames, load_audio, probe

REAL_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
REAL_FILES = sorted(
    p.relative_to(REAL_DATA).as_posix()
    for sub in ("video", "audio") if (REAL_DATA / sub).is_dir()
    for p in (REAL_DATA / sub).iterdir() if p.suffix.lower() not in (".csv", ".txt", ".md")
)
# What SOURCES.md states for the real clips: nominal fps, width, height.
REAL_FACTS = {
    "face_then_cartoon_hevc.mov": (30.0, 960, 540), "smile_single_face.mp4": (30.0, 640, 360),
    "silent_face_pexels.mp4": (23.976, 640, 360), "no_face_cartoon.mp4": (24.0, 960, 540),
    "stage_multi_face.mp4": (29.97, 640, 360),
}


def decode_all(path: Path, **kw) -> tuple[np.ndarray, np.ndarray]:
    batches = list(iter_frames(path, **kw))
    return np.concatenate([b.frames for b in batches]), np.concatenate([b.times for b in batches])


def decoder_threads() -> list[threading.Thread]:
    """Live frame-decoder threads."""
    return [t for t in threading.enumerate() if t.name == "msa-frames"]


def assert_consistent(path: Path, info: media.MediaInfo, frames: np.ndarray, times: np.ndarray) -> None:
    """Frame count, spacing and size agree with what probe reported, within one frame."""
    n = len(frames)
    assert abs(n - info.n_frames) <= 1
    assert abs(n - info.duration * info.fps) <= 1
    np.testing.assert_allclose(times, np.arange(n) / info.fps, atol=1e-9)
    assert times[-1] < info.duration
    assert frames.dtype == np.uint8 and frames.shape[1:] == (info.height, info.width, 3)


# --------------------------------------------------------------------------------------- probe
def test_probe_audio_video_clip(av_clip: Path) -> None:
    info = probe(av_clip)
    assert info.path == av_clip and info.has_audio and info.has_video
    assert info.duration == pytest.approx(2.0, abs=0.03)
    assert info.fps == 25 and info.n_frames == 50
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert (info.audio_rate, info.audio_channels) == (44100, 1)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert "mp4" in info.format


@pytest.mark.parametrize(
    "avg, tbr, expected",
    [("25", "25", 25), ("26.40", "30", 30), ("25", "50", 25), ("29.97", "29.97", 30000 / 1001),
     ("23.98", "23.98", 24000 / 1001), ("29.97", "1k", 30000 / 1001), ("23.67", "24", 24)],
)
def test_nominal_fps_rule(avg: str, tbr: str, expected: float) -> None:
    assert float(media._nominal_fps(media._rate(avg), media._rate(tbr))) == pytest.approx(expected, abs=1e-9)


# --------------------------------------------------------------------------------------- frames
def test_frames_native_rate_match_probe(av_clip: Path) -> None:
    info = probe(av_clip)
    batches = list(iter_frames(av_clip, batch=16))
    assert [len(b) for b in batches[:-1]] == [16] * (len(batches) - 1) and 0 < len(batches[-1]) <= 16
    frames = np.concatenate([b.frames for b in batches])
    assert_consistent(av_clip, info, frames, np.concatenate([b.times for b in batches]))
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 1  # testsrc2 moves: real frames


def test_frames_requested_fps_and_downscale(av_clip: Path) -> None:
    frames, times = decode_all(av_clip, fps=5, max_side=80)
    assert frames.shape == (10, 60, 80, 3)
    np.testing.assert_allclose(times, np.arange(10) / 5)
    full, _ = decode_all(av_clip, fps=5)
    small_from_full = full[:, ::2, ::2].astype(float)  # same content, half size
    assert np.abs(small_from_full - frames).mean() < 30


def test_reused_buffers_give_the_same_frames(av_clip: Path) -> None:
    """reuse=True: two buffers take turns (no fresh memory per batch); a batch used before the next one is
    asked for holds exactly the frames of a plain decode."""
    plain = [(b.frames.copy(), b.times.copy()) for b in iter_frames(av_clip, fps=10, batch=3)]
    reused, buffers = [], []
    for b in iter_frames(av_clip, fps=10, batch=3, reuse=True):
        reused.append((b.frames.copy(), b.times.copy()))
        owner = b.frames
        while owner.base is not None:  # down to the array the frames were decoded into
            owner = owner.base
        if not any(owner is seen for seen in buffers):
            buffers.append(owner)
    assert len(plain) == len(reused) >= 5
    for (f0, t0), (f1, t1) in zip(plain, reused, strict=True):
        np.testing.assert_array_equal(f1, f0)
        np.testing.assert_array_equal(t1, t0)
    assert len(buffers) == 2  # two buffers in turn, not one per batch


def test_frames_are_rgb(tmp_path: Path, ffmpeg_exe: str) -> None:
    red = tmp_path / "red.mp4"
    subprocess.run([ffmpeg_exe, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=red:s=64x48:d=0.5",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", str(red)], check=True, timeout=60)
    frames, _ = decode_all(red)
    r, g, b = frames[..., 0].mean(), frames[..., 1].mean(), frames[..., 2].mean()
    assert r > 200 and g < 40 and b < 40


def test_frame_arguments_validated(av_clip: Path) -> None:
    for kw in ({"fps": 0}, {"batch": 0}, {"max_side": 0}):
        with pytest.raises(UsageError):
            iter_frames(av_clip, **kw)


def test_120fps(clip_120fps: Path) -> None:
    info = probe(clip_120fps)
    assert info.fps == 120 and info.n_frames == 120
    frames, times = decode_all(clip_120fps)
    assert_consistent(clip_120fps, info, frames, times)


def test_hevc_mov(hevc_mov: Path) -> None:
    info = probe(hevc_mov)
    assert info.video_codec == "hevc" and info.has_audio
    frames, times = decode_all(hevc_mov)
    assert_consistent(hevc_mov, info, frames, times)


def test_mpeg1_mpg(mpeg1_mpg: Path) -> None:
    info = probe(mpeg1_mpg)
    assert (info.video_codec, info.audio_codec, info.fps) == ("mpeg1video", "mp2", 25)
    frames, times = decode_all(mpeg1_mpg)
    assert_consistent(mpeg1_mpg, info, frames, times)
    assert load_audio(mpeg1_mpg, info=info).size == pytest.approx(info.duration * 16000, abs=16000 / 25)


def test_variable_frame_rate_decodes_on_nominal_grid(vfr_clip: Path, ffmpeg_exe: str) -> None:
    stderr = subprocess.run([ffmpeg_exe, "-hide_banner", "-i", str(vfr_clip)], capture_output=True, text=True,
                            timeout=60).stderr
    assert "30 tbr" in stderr and "30 fps" not in stderr  # really variable: average below nominal
    info = probe(vfr_clip)
    assert info.fps == 30
    frames, times = decode_all(vfr_clip)
    assert_consistent(vfr_clip, info, frames, times)
    same = [np.array_equal(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    assert not any(same[:25]) and sum(same[35:]) >= len(same[35:]) // 2  # held frames repeat after 1 s


@pytest.mark.parametrize("ext", ["mov", "mkv", "avi", "webm"])
def test_other_containers(make_clip, ext: str) -> None:
    clip = make_clip(duration=1.0, fps=24, size=(96, 64), ext=ext)
    info = probe(clip)
    frames, times = decode_all(clip, info=info)
    assert_consistent(clip, info, frames, times)
    assert load_audio(clip, info=info).size == pytest.approx(info.duration * 16000, abs=16000 / 24)


def test_very_short_clip(make_clip) -> None:
    clip = make_clip(duration=0.2)
    info = probe(clip)
    frames, times = decode_all(clip, info=info)
    assert_consistent(clip, info, frames, times)
    assert len(frames) == 5 and load_audio(clip, info=info).size == pytest.approx(3200, abs=640)


def cli_frames(ffmpeg_exe: str, path: Path, fps: float, max_side: int | None) -> np.ndarray:
    """The same frames from ffmpeg's command line: its fps filter, area scaling, RGB, cut at the duration."""
    info = probe(path)
    w, h = media._out_size(info, max_side)
    graph = f"[0:V:0]fps=fps={fps}:start_time=0[a];[a]scale={w}:{h}:flags=area[b]"
    out = subprocess.run([ffmpeg_exe, "-nostdin", "-loglevel", "error", "-threads", "1", "-i", f"file:{path}",
                          "-filter_complex", graph, "-map", "[b]", "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-fps_mode", "passthrough", "-t", f"{info.duration:.6f}", "pipe:"],
                         capture_output=True, check=True, timeout=120).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


def late_video(folder: Path, ffmpeg_exe: str, name: str, *out_args: str) -> Path:
    """Video with B-frames starting 0.33 s after the audio (audio 2 s of sine, video 2 s of testsrc2)."""
    out = folder / name
    subprocess.run([ffmpeg_exe, "-nostdin", "-loglevel", "error", "-itsoffset", "0.33", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
                    "-c:v", "libx264", "-bf", "3", "-c:a", "aac", *out_args, str(out)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def late_video_ts(tmp_path_factory: pytest.TempPathFactory, ffmpeg_exe: str) -> Path:
    """MPEG-TS, a format whose clock may jump: ffmpeg starts each stream at its own first time."""
    return late_video(tmp_path_factory.mktemp("late"), ffmpeg_exe, "late_video.ts")


@pytest.fixture(scope="module")
def late_video_mkv(tmp_path_factory: pytest.TempPathFactory, ffmpeg_exe: str) -> Path:
    """Matroska whose timeline starts at 0.21 s (the audio), the video at 0.54 s: ffmpeg moves both by 0.21 s."""
    return late_video(tmp_path_factory.mktemp("late"), ffmpeg_exe, "late_video.mkv", "-output_ts_offset", "0.21")


@pytest.mark.parametrize("fixture", ["rotated_clip", "mpeg1_mpg", "vfr_clip", "late_video_ts", "late_video_mkv",
                                     "hevc_mov"])
@pytest.mark.parametrize("fps, max_side", [(None, None), (10.0, 96), (7.3, None)])
def test_frames_are_byte_identical_to_ffmpeg_command_line(request: pytest.FixtureRequest, ffmpeg_exe: str,
                                                         fixture: str, fps: float | None,
                                                         max_side: int | None) -> None:
    """In-process decoding reproduces the command line's timeline handling (start offsets, rotation, frame
    choice at rates that do not divide the source's, the cut at the duration) bit for bit."""
    path = request.getfixturevalue(fixture)
    frames, _ = decode_all(path, fps=fps, max_side=max_side)
    expected = cli_frames(ffmpeg_exe, path, fps or probe(path).fps, max_side)
    assert frames.shape == expected.shape and np.array_equal(frames, expected)


@pytest.mark.skipif(not (REAL_DATA / "video" / "stage_multi_face.mp4").exists(), reason="needs ../shared/data")
def test_real_clip_starting_late_is_byte_identical_to_ffmpeg_command_line(ffmpeg_exe: str) -> None:
    """stage_multi_face.mp4: the container starts at 8 ms (AAC priming), the video at 0.85 s."""
    path = REAL_DATA / "video" / "stage_multi_face.mp4"
    frames, _ = decode_all(path, fps=10.0, max_side=320)
    assert np.array_equal(frames, cli_frames(ffmpeg_exe, path, 10.0, 320))


def test_rotation_applied(rotated_clip: Path) -> None:
    info = probe(rotated_clip)
    assert (info.rotation, info.width, info.height) == (90, 120, 160)
    frames, times = decode_all(rotated_clip)
    assert_consistent(rotated_clip, info, frames, times)
    plain, _ = decode_all(rotated_clip.with_name(f"norot_{rotated_clip.name}"))
    np.testing.assert_array_equal(frames, np.rot90(plain, k=1, axes=(1, 2)))  # 90 deg counter-clockwise


# ---------------------------------------------------------------------------------------- audio
def test_audio_tone_16k_mono(av_clip: Path) -> None:
    audio = load_audio(av_clip)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.flags.writeable
    assert audio.size == pytest.approx(2.0 * 16000, abs=16000 / 25)
    spectrum = np.abs(np.fft.rfft(audio[2000:18000]))
    assert np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_audio_other_rate(tone_wav: Path) -> None:
    assert load_audio(tone_wav, sr=8000).size == pytest.approx(2.0 * 8000, abs=80)


def test_audio_starting_late_is_padded_to_timeline(make_clip) -> None:
    clip = make_clip(duration=2.0, audio_offset=1.0)
    info = probe(clip)
    audio = load_audio(clip, info=info)
    assert audio.size == pytest.approx(info.duration * 16000, abs=16000 / 25)
    assert np.sqrt(np.mean(audio[:14000] ** 2)) < 1e-3  # silence before the stream starts at 1 s
    assert np.sqrt(np.mean(audio[18000:30000] ** 2)) > 0.05


@pytest.mark.parametrize("ext", ["wav", "flac", "aiff", "mp3"])
def test_audio_only_files(audio_only_clips: dict[str, Path], ext: str) -> None:
    path = audio_only_clips[ext]
    info = probe(path)
    assert info.has_audio and not info.has_video and info.fps is None and info.n_frames is None
    assert info.audio_channels == (2 if ext == "flac" else 1)
    assert load_audio(path, info=info).size == pytest.approx(info.duration * 16000, abs=0.03 * 16000)
    with pytest.raises(MediaError) as e:
        iter_frames(path)  # raised at call time, not on first next()
    assert e.value.reason == "no_video" and path.name in str(e.value)


def test_mp3_cover_art_is_not_video(tmp_path: Path, tone_wav: Path, ffmpeg_exe: str) -> None:
    mp3 = tmp_path / "cover.mp3"
    subprocess.run([ffmpeg_exe, "-nostdin", "-loglevel", "error", "-i", str(tone_wav), "-f", "lavfi", "-i",
                    "color=red:s=64x64:d=0.04", "-map", "0", "-map", "1", "-c:v", "mjpeg",
                    "-disposition:v", "attached_pic", str(mp3)], check=True, timeout=60)
    info = probe(mp3)
    assert info.has_audio and not info.has_video
    assert load_audio(mp3).size == pytest.approx(2.0 * 16000, abs=0.06 * 16000)


def test_video_without_audio(video_only_clip: Path) -> None:
    info = probe(video_only_clip)
    assert info.has_video and not info.has_audio and info.audio_rate is None
    with pytest.raises(MediaError) as e:
        load_audio(video_only_clip)
    assert e.value.reason == "no_audio" and video_only_clip.name in e.value.one_line()


# --------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, reason",
    [("empty", "corrupt_media"), ("text_renamed", "corrupt_media"), ("random_bytes", "corrupt_media"),
     ("truncated", "corrupt_media"), ("directory", "not_found"), ("missing", "not_found")],
)
def test_bad_files_raise_typed_one_line_errors(bad_media: dict[str, Path], name: str, reason: str) -> None:
    path = bad_media[name]
    with pytest.raises(MediaError) as e:
        info = probe(path)  # a truncated file may still probe; decoding must then fail
        list(iter_frames(path, info=info))
        load_audio(path, info=info)
    assert e.value.reason == reason
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not decoder_threads()


def test_odd_path_names(av_clip: Path, tmp_path: Path) -> None:
    odd = tmp_path / "-leading dash été: 1.mp4"
    odd.write_bytes(av_clip.read_bytes())
    info = probe(odd)
    assert info.n_frames == 50 and sum(len(b) for b in iter_frames(odd, fps=5, info=info)) == 10
    assert load_audio(odd, info=info).size == pytest.approx(32000, abs=640)


def test_truncated_audio_is_an_error(bad_media: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as e:
        load_audio(bad_media["truncated"])
    assert e.value.reason == "corrupt_media"


def test_probe_timeout(av_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "PROBE_TIMEOUT_S", 1e-4)
    with pytest.raises(MediaError) as e:
        probe(av_clip)
    assert e.value.reason == "timeout"


def test_decode_stall_timeout_stops_the_decoder(av_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe(av_clip)
    monkeypatch.setattr(media, "STALL_TIMEOUT_S", 1e-4)
    with pytest.raises(MediaError) as e:
        list(iter_frames(av_clip, info=info))
    assert e.value.reason == "timeout"
    deadline = time.monotonic() + 10  # the thread was busy past the (tiny) limit: it ends after its current batch
    while decoder_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not decoder_threads()


# ------------------------------------------------------------------------- lifecycle and memory
@pytest.fixture(scope="module")
def long_clip(make_clip) -> Path:
    return make_clip(duration=60.0, fps=25, size=(160, 120), audio=False)


def test_early_close_and_abandon_stop_the_decoder(long_clip: Path) -> None:
    frames = iter_frames(long_clip, batch=4)
    assert len(next(frames)) == 4
    assert len(decoder_threads()) == 1
    frames.close()
    assert not decoder_threads()

    def consume_then_fail() -> None:
        for _ in iter_frames(long_clip, batch=4):
            raise RuntimeError("extractor failed")

    with pytest.raises(RuntimeError):
        consume_then_fail()
    gc.collect()
    assert not decoder_threads()


def test_long_clip_streams_with_bounded_memory(long_clip: Path) -> None:
    info = probe(long_clip)
    batch_bytes = 16 * 120 * 160 * 3
    total_bytes = info.n_frames * 120 * 160 * 3
    tracemalloc.start()
    try:
        n = 0
        for b in iter_frames(long_clip, batch=16, info=info):
            n += len(b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(n - info.n_frames) <= 1 and total_bytes > 50 * batch_bytes
    assert peak < 4 * batch_bytes, f"peak {peak / 1e6:.1f} MB while streaming {total_bytes / 1e6:.0f} MB of frames"


# ------------------------------------------------------------------------------------------ Clip
def test_clip_from_path_caches_audio(av_clip: Path) -> None:
    clip = Clip.from_path(av_clip, transcript="hello there")
    assert clip.clip_id == av_clip.stem and clip.duration == pytest.approx(2.0, abs=0.03)
    assert clip.transcript.text == "hello there" and clip.has_audio and clip.has_video
    audio = clip.audio()
    assert clip.audio() is audio and not audio.flags.writeable
    assert clip.audio(8000).size == pytest.approx(audio.size / 2, abs=2)
    batches = list(clip.frames(fps=10, batch=8, max_side=40))
    assert sum(len(b) for b in batches) == 20 and batches[0].frames.shape[1:] == (30, 40, 3)


def test_clip_text_only() -> None:
    clip = Clip.text_only("vid_3", "it was great")
    assert (clip.clip_id, clip.path, clip.duration, clip.has_audio) == ("vid_3", None, None, False)
    assert clip.transcript.text == "it was great" and clip.transcript.source == "label_csv"
    with pytest.raises(MediaError) as e:
        clip.audio()
    assert e.value.reason == "no_audio"
    with pytest.raises(MediaError) as e:
        clip.frames()
    assert e.value.reason == "no_video"


def test_clip_from_missing_path(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as e:
        Clip.from_path(tmp_path / "nope.mp4")
    assert e.value.reason == "not_found"


# ------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
@pytest.mark.parametrize("name", REAL_FILES or [pytest.param("", marks=pytest.mark.skip("../shared/data absent"))])
def test_real_media_decodes_as_probed(shared_data: Path, name: str) -> None:
    path = shared_data / name
    info = probe(path)
    audio = load_audio(path, info=info)
    frame_s = 1 / info.fps if info.has_video else 0.03
    assert abs(audio.size / 16000 - info.duration) <= frame_s
    if not info.has_video:
        return
    first = next(iter_frames(path, batch=2, info=info))
    assert first.frames.shape == (2, info.height, info.width, 3)
    frames, times = decode_all(path, max_side=64, info=info)  # small frames: counting, not viewing
    n = len(frames)
    assert abs(n - info.n_frames) <= 1 and abs(n - info.duration * info.fps) <= 1
    np.testing.assert_allclose(times, np.arange(n) / info.fps, atol=1e-9)
    assert times[-1] < info.duration
    if name.startswith("video/grid_"):
        assert (info.fps, info.width, info.height, info.video_codec) == (25, 360, 288, "mpeg1video")
    elif Path(name).name in REAL_FACTS:
        fps, width, height = REAL_FACTS[Path(name).name]
        assert info.fps == pytest.approx(fps, abs=0.01) and (info.width, info.height) == (width, height)


