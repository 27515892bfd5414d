"""In-memory media I/O: probe a file, decode 16 kHz mono audio, stream RGB frames in batches.

Probing and audio go through the static ffmpeg shipped by ``imageio-ffmpeg`` (there is no ffprobe):
probing parses ``ffmpeg -i`` output, audio runs an ffmpeg-python-compiled argument list with a
timeout. Frames are decoded in this process by PyAV (FFmpeg's libraries; faster-whisper needs it
anyway), through the filter chain ffmpeg's command line would build, so they are byte-identical to
what ``ffmpeg ... -f rawvideo`` gives (tested) without a process start and a pipe copy per clip.
Nothing is written to disk and a video is never held whole in memory.

Timeline: every modality lives on the container's timeline, which starts at 0.

- Audio is padded with silence where its stream starts late, so sample ``i`` is at ``i / sr`` s.
- Frames are resampled onto a constant grid ``times = i / fps`` (ffmpeg's ``fps`` filter, padding
  a late-starting video with its first frame) and stop at the container duration, so
  ``len(frames) == round(duration * fps)`` within one frame.
- The native ``fps`` is the nominal rate (ffmpeg's ``tbr``), not the average: a variable frame rate
  clip with dropped frames (e.g. ``26.40 fps, 30 tbr``) decodes at 30 fps with held frames repeated,
  keeping frame times evenly spaced. A doubled ``tbr`` (MPEG field rate, ``25 fps, 50 tbr``) or a
  time-base-like ``tbr`` (``1k tbr``) falls back to the average rate.
- Rotation metadata is applied (ffmpeg autorotates); ``width``/``height`` are the displayed size.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import queue
import re
import stat
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from msa.core.errors import MediaError, UsageError

PROBE_TIMEOUT_S = 30.0  # one ``ffmpeg -i`` call
AUDIO_TIMEOUT_S = 60.0  # plus AUDIO_TIMEOUT_PER_S for every second of media
AUDIO_TIMEOUT_PER_S = 1.0
STALL_TIMEOUT_S = 60.0  # frames: longest wait for the decoder thread to fill a batch
MAX_FRAME_PIXELS = 8192 * 8192  # larger decoded frames only come from corrupt headers: refused
MAX_BATCH_BYTES = 128 * 2**20  # one batch of frames never takes more memory than this (batch shrinks); two exist at once
_log = logging.getLogger(__name__)
_GLOBAL_ARGS = ["-nostdin", "-hide_banner", "-loglevel", "error"]
_INPUT_KW = {"protocol_whitelist": "file"}  # a crafted playlist cannot reach the network
_NTSC = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120, 240))
_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "4.1": 5, "5.0": 5, "5.1": 6,
             "6.0": 6, "6.1": 7, "7.0": 7, "7.1": 8}


@dataclass(frozen=True)
class MediaInfo:
    """What ``probe`` learns from the container. Sizes are after rotation; ``fps`` is nominal."""

    path: Path
    duration: float | None
    has_audio: bool
    has_video: bool
    fps: float | None
    n_frames: int | None  # frames ``iter_frames(path)`` yields at ``fps`` (within one)
    width: int | None
    height: int | None
    rotation: int  # degrees counter-clockwise applied when decoding, in {0, 90, 180, 270}
    audio_rate: int | None
    audio_channels: int | None
    video_codec: str | None
    audio_codec: str | None
    format: str


@dataclass(frozen=True)
class FrameBatch:
    """``frames`` uint8 (n, H, W, 3) RGB and their ``times`` (n,) in seconds on the clip timeline."""

    frames: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the static ffmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version`` (e.g. ``ffmpeg version n9.0.2 ...``)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True,
                         timeout=PROBE_TIMEOUT_S, check=True).stdout
    first = out.splitlines()[0] if out else "unknown"
    return first.split(" Copyright")[0].strip()


# ----------------------------------------------------------------------------------------- probe
def _check_file(path: Path) -> None:
    """Fail fast, with a reason code, on paths ffmpeg would only report vaguely."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file", reason="not_found") from None
    except OSError as e:  # symlink loop, name too long, ...
        raise MediaError(f"{path}: cannot access ({e.strerror or e})", reason="not_found") from e
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{path}: is a directory, not a media file", reason="not_found")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{path}: not a regular file", reason="not_found")
    if st.st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)", reason="corrupt_media")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{path}: permission denied", reason="permission_denied")


def _split_top(s: str) -> list[str]:
    """Split ffmpeg's stream description at commas outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in s:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def _rate(token: str) -> Fraction | None:
    """'29.97' -> 30000/1001, '30' -> 30, '90k' -> 90000."""
    mult = 1000 if token.endswith("k") else 1
    try:
        value = Fraction(token.rstrip("k")) * mult
    except ValueError:
        return None
    if value <= 0:
        return None
    for ntsc in _NTSC:  # ffmpeg prints two decimals; recover the exact NTSC rational
        if abs(value - ntsc) < Fraction(6, 1000):
            return ntsc
    return value


def _nominal_fps(avg: Fraction | None, tbr: Fraction | None) -> Fraction | None:
    """Pick the frame rate to decode at from ffmpeg's average ``fps`` and nominal ``tbr``."""
    if avg is None or tbr is None:
        return tbr or avg
    if tbr > 210 and avg < 70:  # tbr is a time base, not a frame rate
        return avg
    if abs(tbr - 2 * avg) <= tbr / 200:  # field rate of interlaced/MPEG streams
        return avg
    return tbr  # constant rate, or variable rate whose held frames lower the average


def frame_decoder_version() -> str:
    """PyAV's version and the libavcodec inside it: frames are decoded in-process with them."""
    import av

    return f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})"


def _error_line(stderr: str) -> str:
    """The most telling line of ffmpeg's stderr, without ffmpeg's own prefixes."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("At least one output file")]
    if not lines:
        return "ffmpeg failed without a message"
    line = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1])
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)
    return line.replace("Error opening input files: ", "").replace("Error opening input: ", "")[:200]


def _parse_streams(text: str) -> tuple[dict[str, str], dict[str, str], int]:
    """First real video stream, first audio stream (their descriptions), and video rotation."""
    video: dict[str, str] = {}
    audio: dict[str, str] = {}
    rotation = 0.0
    current = ""
    for line in text.splitlines():
        m = re.match(r"\s*Stream #0:\d+\S*: (\w+): (.*)$", line)
        if m:
            kind, desc = m.groups()
            current = ""
            if kind == "Video" and not video and "(attached pic)" not in desc:
                video, current = {"desc": desc}, "video"
            elif kind == "Audio" and not audio:
                audio = {"desc": desc}
            continue
        r = re.search(r"rotation of (-?[\d.]+) degrees", line, re.IGNORECASE)
        if r and current == "video":
            rotation = float(r.group(1))
    return video, audio, int(round(rotation)) % 360


def _parse_video(desc: str) -> tuple[str, int | None, int | None, Fraction | None, float]:
    codec = _split_top(desc)[0].split()[0] if desc else "unknown"
    width = height = None
    avg = tbr = None
    start = 0.0
    for part in _split_top(desc):
        if (m := re.match(r"(\d+)x(\d+)(\s|$)", part)) and width is None:
            width, height = int(m.group(1)), int(m.group(2))
        elif m := re.fullmatch(r"([\d.]+k?) fps", part):
            avg = _rate(m.group(1))
        elif m := re.fullmatch(r"([\d.]+k?) tbr", part):
            tbr = _rate(m.group(1))
        elif m := re.match(r"start (-?[\d.]+)", part):
            start = float(m.group(1))
    return codec, width, height, _nominal_fps(avg, tbr), start


def _parse_audio(desc: str) -> tuple[str, int | None, int | None]:
    codec = _split_top(desc)[0].split()[0] if desc else "unknown"
    rate = channels = None
    for part in _split_top(desc):
        if m := re.fullmatch(r"(\d+) Hz", part):
            rate = int(m.group(1))
        elif m := re.fullmatch(r"(\d+) channels.*", part):
            channels = int(m.group(1))
        elif channels is None and part.split("(")[0] in _CHANNELS:
            channels = _CHANNELS[part.split("(")[0]]
    return codec, rate, channels


def _parse_duration(text: str) -> float | None:
    m = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    if not m:
        return None
    h, mnt, sec = m.groups()
    return int(h) * 3600 + int(mnt) * 60 + float(sec)


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Streams, duration, nominal fps, displayed size, rotation and codecs of a media file."""
    path = Path(path)
    _check_file(path)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-protocol_whitelist", "file",
           "-i", f"file:{path.resolve()}"]
    try:  # no output file: ffmpeg prints the input description and exits 1 by design
        res = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{path}: probing timed out after {PROBE_TIMEOUT_S:g} s", reason="timeout") from None
    text = res.stderr.decode("utf-8", "replace")
    m = re.search(r"^Input #0, (.+?), from '", text, re.MULTILINE)
    if not m:
        raise MediaError(f"{path}: not a readable media file ({_error_line(text)})", reason="corrupt_media")
    video, audio, rotation = _parse_streams(text)
    if not video and not audio:
        raise MediaError(f"{path}: no audio or video stream (format {m.group(1)})", reason="corrupt_media")
    duration = _parse_duration(text)
    vcodec = width = height = fps = None
    n_frames = None
    if video:
        vcodec, width, height, fps, _ = _parse_video(video["desc"])
        if rotation in (90, 270) and width is not None:
            width, height = height, width
        if fps is not None and duration is not None:
            n_frames = max(1, math.floor(duration * fps + 0.5))
    acodec = rate = channels = None
    if audio:
        acodec, rate, channels = _parse_audio(audio["desc"])
    return MediaInfo(
        path=path, duration=duration, has_audio=bool(audio), has_video=bool(video),
        fps=float(fps) if fps is not None else None, n_frames=n_frames, width=width, height=height,
        rotation=rotation, audio_rate=rate, audio_channels=channels, video_codec=vcodec,
        audio_codec=acodec, format=m.group(1),
    )


# ------------------------------------------------------------------------------------ decoding
def _verdict(path: Path, kind: str, rc: int, stderr: bytes, got_s: float, expected_s: float | None) -> None:
    """Turn a finished ffmpeg decode into an error when it failed or stopped early; log concealed glitches.

    Truncation shows as ffmpeg's "partial file" or as output covering too little of the probed duration;
    isolated decode errors that ffmpeg concealed only produce a warning.
    """
    text = stderr.decode("utf-8", "replace").strip()
    if rc != 0:
        raise MediaError(f"{path}: {kind} cannot be decoded ({_error_line(text)})", reason="corrupt_media")
    _check_coverage(path, kind, got_s, expected_s, truncated="partial file" in text)
    if text:
        _warn_concealed(path, kind, len(text.splitlines()), text.splitlines()[0])


def _check_coverage(path: Path, kind: str, got_s: float, expected_s: float | None, truncated: bool = False) -> None:
    """Nothing decoded, or under half the probed duration (and over a second short), is an error."""
    if got_s <= 0:
        raise MediaError(f"{path}: {kind} track decodes to nothing", reason="corrupt_media")
    if truncated or (expected_s and got_s < 0.5 * expected_s and expected_s - got_s > 1.0):
        raise MediaError(
            f"{path}: truncated or corrupt {kind}: decoded {got_s:.2f} s of {expected_s or 0:.2f} s",
            reason="corrupt_media",
        )


def _warn_concealed(path: Path, kind: str, n: int, first: str) -> None:
    _log.warning("%s: %d %s decoding error(s) concealed, first: %s", path, n, kind, first[:200])


def _compile(stream: object) -> list[str]:
    """ffmpeg-python graph -> argument list with our global flags placed before the input."""
    args = stream.compile(cmd=ffmpeg_exe())  # type: ignore[attr-defined]
    return [args[0], *_GLOBAL_ARGS, *args[1:]]


def _input(path: Path, **kw: object) -> object:
    import ffmpeg

    return ffmpeg.input(f"file:{path.resolve()}", **_INPUT_KW, **kw)


def load_audio(path: str | os.PathLike[str], sr: int = 16000, *, info: MediaInfo | None = None) -> np.ndarray:
    """Decode the first audio stream to mono float32 at ``sr`` Hz, padded to start at time 0."""
    if sr <= 0:
        raise UsageError(f"load_audio: sample rate must be positive (got {sr})")
    path = Path(path)
    info = info or probe(path)
    if not info.has_audio:
        raise MediaError(f"{path}: no audio track", reason="no_audio")
    stream = _input(path)["a:0"].filter("aresample", sr, **{"async": 1, "first_pts": 0}).output(
        "pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sr
    )
    timeout = AUDIO_TIMEOUT_S + AUDIO_TIMEOUT_PER_S * (info.duration or 0.0)
    try:
        res = subprocess.run(_compile(stream), capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{path}: audio decoding timed out after {timeout:g} s", reason="timeout") from None
    audio = np.frombuffer(res.stdout, dtype="<f4").astype(np.float32)  # a writable copy
    _verdict(path, "audio", res.returncode, res.stderr, audio.size / sr, info.duration)
    return audio


def _out_size(info: MediaInfo, max_side: int | None) -> tuple[int, int]:
    if info.width is None or info.height is None:
        raise MediaError(f"{info.path}: video size unknown", reason="corrupt_media")
    w, h = info.width, info.height
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    return w, h


def iter_frames(
    path: str | os.PathLike[str],
    fps: float | None = None,
    batch: int = 32,
    max_side: int | None = None,
    *,
    info: MediaInfo | None = None,
    reuse: bool = False,
) -> Iterator[FrameBatch]:
    """RGB frames at ``fps`` (default: the nominal rate) in batches of at most ``batch``.

    Raises ``MediaError`` here (not on first ``next``) when the file has no video. Decoding runs in
    this process, on a thread that fills the next batch while the caller works on this one; the thread
    stops and the file is closed when the iterator is closed, garbage-collected or fails. ``reuse``:
    two buffers take turns, so a batch's frames are overwritten as soon as the caller asks for the next
    batch; for callers that are done with a batch by then (no fresh memory to fault in for each batch).
    """
    path = Path(path)
    info = info or probe(path)
    if not info.has_video:
        raise MediaError(f"{path}: no video track", reason="no_video")
    native = info.fps or 25.0  # a stream that states no rate at all: assume PAL's 25
    rate = Fraction(fps if fps is not None else native).limit_denominator(1001)
    if rate <= 0 or batch < 1 or (max_side is not None and max_side < 1):
        raise UsageError(f"iter_frames: fps, batch and max_side must be positive (got {fps}, {batch}, {max_side})")
    w, h = _out_size(info, max_side)
    if w * h > MAX_FRAME_PIXELS:
        raise MediaError(f"{path}: {w}x{h} frames are larger than msa decodes (corrupt header?); pass max_side to "
                         "downscale", reason="too_large")
    batch = max(1, min(batch, MAX_BATCH_BYTES // (w * h * 3)))
    return _batches(_Decode(path, info, rate, w, h), batch, reuse)


@dataclass(frozen=True)
class _Decode:
    """One video decode: the file, what probe said of it, and the output grid and size."""

    path: Path
    info: MediaInfo
    rate: Fraction
    width: int
    height: int

    def last_frame(self) -> int | None:
        """Frames stop before the container's end, ``i / rate < duration`` (ffmpeg's ``-t``), exactly."""
        if self.info.duration is None:
            return None
        end = Fraction(round(self.info.duration * 1_000_000), 1_000_000)
        return math.ceil(end * self.rate)


@dataclass
class _End:
    """The decoder thread's last message: decoding finished; packets the decoder rejected."""

    rejected: int = 0
    first: str = ""


def _batches(job: _Decode, batch: int, reuse: bool) -> Iterator[FrameBatch]:
    """Batches from a decoder thread that is allowed one batch ahead of the caller (at most two batches
    exist at once). A batch that takes longer than ``STALL_TIMEOUT_S`` is a ``MediaError``."""
    out: queue.Queue[tuple[np.ndarray, int] | _End | BaseException] = queue.Queue()
    go = threading.Semaphore(1)  # one permit per batch the thread may fill
    stop = threading.Event()
    thread = threading.Thread(target=_decode_into, args=(job, batch, reuse, out, go, stop), daemon=True,
                              name="msa-frames")
    thread.start()
    done = 0
    try:
        while True:
            try:
                item = out.get(timeout=STALL_TIMEOUT_S)
            except queue.Empty:
                raise MediaError(f"{job.path}: decoding stalled for {STALL_TIMEOUT_S:g} s", reason="timeout") from None
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _End):
                break
            buf, n = item
            go.release()  # the caller asked for this batch: it is done with the one before
            yield FrameBatch(buf[:n], (done + np.arange(n, dtype=np.float64)) / float(job.rate))
            done += n
        _check_coverage(job.path, "video", done / float(job.rate), job.info.duration)
        if item.rejected:
            _warn_concealed(job.path, "video", item.rejected, item.first)
    finally:
        stop.set()
        go.release()  # wakes a thread waiting for a permit, so that it sees ``stop``
        thread.join(timeout=STALL_TIMEOUT_S)


def _decode_into(job: _Decode, batch: int, reuse: bool, out: queue.Queue, go: threading.Semaphore,
                 stop: threading.Event) -> None:
    """The decoder thread: fills a batch each time it is permitted; reports the end or an error through
    ``out``."""
    shape = (batch, job.height, job.width, 3)
    turns = [np.empty(shape, np.uint8), np.empty(shape, np.uint8)] if reuse else []
    end = _End()
    last = job.last_frame()
    frames = _rgb_frames(job, end)
    try:
        done = 0
        while last is None or done < last:
            go.acquire()
            if stop.is_set():
                return
            buf = turns[done // batch % 2] if reuse else np.empty(shape, np.uint8)
            want = batch if last is None else min(batch, last - done)
            n = 0
            for frame in itertools.islice(frames, want):
                buf[n] = frame
                n += 1
            if n:
                out.put((buf, n))
                done += n
            if n < want:  # the stream ended
                break
        out.put(end)
    except BaseException as e:  # handed to the caller's thread, which raises it
        out.put(e)
    finally:
        frames.close()


def _rgb_frames(job: _Decode, end: _End) -> Iterator[np.ndarray]:
    """The video's frames on the output grid, rotated and scaled: (H, W, 3) views, each valid until the
    next is asked for. Packets the decoder rejects are counted in ``end`` and skipped (ffmpeg conceals
    them too); a file that cannot be opened or read on is a ``MediaError``."""
    import av

    try:
        with av.open(f"file:{job.path.resolve()}", options={"protocol_whitelist": "file"}) as container:
            stream = next((s for s in container.streams.video
                           if not s.disposition & av.stream.Disposition.attached_pic), None)
            if stream is None:
                raise MediaError(f"{job.path}: no video track", reason="no_video")
            stream.thread_count = 1  # one decoding thread: less CPU, and the caller's inference is slower anyway
            graph = None  # built from the first frame: a stream's header may not state its pixel format
            offset = _start_offset(container, stream)
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as e:
                    end.rejected += 1
                    end.first = end.first or str(e)
                    continue
                for frame in decoded:
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:  # no time at all: the filter cannot place it on the grid
                        end.rejected += 1
                        continue
                    frame.pts = pts - offset
                    graph = graph or _filter_graph(frame, stream.time_base, job)
                    graph.push(frame)
                    yield from _pulled(graph)
            if graph is not None:
                graph.push(None)
                yield from _pulled(graph)
    except av.FFmpegError as e:
        raise MediaError(f"{job.path}: video cannot be decoded ({e})", reason="corrupt_media") from None


def _filter_graph(first: Any, time_base: Fraction, job: _Decode) -> Any:
    """ffmpeg's own chain, as its command line builds it: autorotation, then ``fps`` onto the grid from
    time 0, then an area-averaging ``scale`` straight to RGB (it also takes frames whose size changes)."""
    import av

    graph = av.filter.Graph()
    chain = [graph.add_buffer(width=first.width, height=first.height, format=first.format, time_base=time_base)]
    chain += [graph.add(name, arg) for name, arg in _rotation_filters((-job.info.rotation) % 360)]
    chain += [graph.add("fps", f"fps={job.rate}:start_time=0"),
              graph.add("scale", f"{job.width}:{job.height}:flags=area"),
              graph.add("format", "rgb24"), graph.add("buffersink")]
    for a, b in zip(chain, chain[1:]):
        a.link_to(b)
    graph.configure()
    return graph


def _rotation_filters(clockwise: int) -> list[tuple[str, str]]:
    """ffmpeg's autorotation: exact transposes and flips for quarter turns, ``rotate`` otherwise."""
    quarter = {0: [], 90: [("transpose", "clock")], 180: [("hflip", ""), ("vflip", "")],
               270: [("transpose", "cclock")]}
    return quarter.get(clockwise, [("rotate", f"{clockwise:f}*PI/180")])


def _start_offset(container: Any, stream: Any) -> int:
    """What ffmpeg subtracts from the video's timestamps (stream time base), as its command line does:
    the container's start, so every file starts at 0; in formats whose clock may jump (MPEG program
    and transport streams), the video stream's own start."""
    import av

    if container.format.flags & av.format.Flags.ts_discont.value:
        return stream.start_time or 0
    if not container.start_time:
        return 0
    return math.floor(Fraction(container.start_time, 1_000_000) / stream.time_base + Fraction(1, 2))


def _pulled(graph: Any) -> Iterator[np.ndarray]:
    """The frames the graph can give now."""
    import av

    while True:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return
        yield frame.to_ndarray()
