"""Random bytes and mutated real clips into the media layer: the only error is MediaError, and nothing hangs.

Property tests (hypothesis, derandomized so CI is repeatable, bounded example counts, deadline off
because ffmpeg start-up time varies on a busy machine). Every example runs under an alarm: an
ffmpeg call without a working timeout would fail the test instead of hanging CI.
"""
from __future__ import annotations

import ast
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import MediaError

EXAMPLE_LIMIT_S = 150  # far above any honest decode of these small files; below "hung forever"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
REPO = Path(__file__).resolve().parents[2]


class Hung(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in the code under test eats it."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise Hung(f"media call still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def exercise(data: bytes, suffix: str) -> str:
    """Probe, decode audio and stream frames (at native size, then downscaled) the way extractors do.
    Returns 'ok' or the MediaError reason; any other exception fails the property."""
    with tempfile.TemporaryDirectory() as d, time_limit(EXAMPLE_LIMIT_S):
        path = Path(d) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            clip = Clip.from_path(path)
            if clip.has_audio:
                audio = clip.audio()
                assert audio.dtype.name == "float32" and audio.ndim == 1
            if clip.has_video:
                for batch in clip.frames(batch=4):
                    assert batch.frames.ndim == 4 and batch.frames.shape[-1] == 3
                    assert len(batch.times) == len(batch)
                for batch in clip.frames(fps=5, max_side=64):
                    assert max(batch.frames.shape[1:3]) <= 64
        except MediaError as e:
            assert e.one_line() == str(e).strip() or "\n" not in e.one_line()
            assert str(path) in str(e), str(e)  # names the file
            return e.reason
    return "ok"


@FUZZ
@given(data=st.binary(max_size=20_000), suffix=st.sampled_from([".mp4", ".wav", ".mkv", ".mp3", ".avi", ".webm"]))
def test_random_bytes_only_raise_media_error(data: bytes, suffix: str) -> None:
    exercise(data, suffix)


@pytest.fixture(scope="module")
def seeds(make_clip: Any) -> dict[str, bytes]:
    small = dict(duration=1.0, fps=10, size=(64, 48))
    return {"mp4": make_clip(**small).read_bytes(), "mkv": make_clip(**small, ext="mkv").read_bytes(),
            "webm": make_clip(**small, ext="webm").read_bytes(), "avi": make_clip(**small, ext="avi").read_bytes(),
            "wav": make_clip(duration=1.0, video=False, ext="wav", sample_rate=16000).read_bytes()}


def mutations() -> st.SearchStrategy[list[tuple[str, float, int]]]:
    op = st.tuples(st.sampled_from(["flip", "zero", "cut", "truncate", "dup"]), st.floats(0, 1),
                   st.integers(1, 4096))
    return st.lists(op, min_size=1, max_size=6)


def mutate(data: bytes, ops: list[tuple[str, float, int]]) -> bytes:
    b = bytearray(data)
    for kind, where, n in ops:
        if not b:
            break
        i = min(int(where * len(b)), len(b) - 1)
        if kind == "flip":
            b[i] ^= (n % 255) + 1
        elif kind == "zero":
            b[i:i + n] = bytes(len(b[i:i + n]))
        elif kind == "cut":
            del b[i:i + n]
        elif kind == "truncate":
            del b[max(1, i):]
        else:
            b[i:i] = b[i:i + n]
    return bytes(b)


@FUZZ
@given(container=st.sampled_from(["mp4", "mkv", "webm", "avi", "wav"]), ops=mutations())
def test_mutated_real_clips_decode_or_raise_media_error(seeds: dict[str, bytes], container: str,
                                                        ops: list[tuple[str, float, int]]) -> None:
    exercise(mutate(seeds[container], ops), f".{container}")


def test_header_claiming_huge_frames_is_refused_not_allocated(make_clip: Any, tmp_path: Path) -> None:
    """An AVI whose header claims 16000x16000 raw frames: decoding at native size once asked for a
    24 GB buffer (MemoryError, or the OOM killer). Now: a typed error before any allocation, and a
    downscaled decode stays bounded."""
    from msa.pipeline.extract.media import iter_frames, probe

    data = bytearray(make_clip(duration=1.0, fps=10, size=(64, 48), audio=False, ext="avi",
                               vcodec="rawvideo").read_bytes())
    i = data.find(b"strf")  # BITMAPINFOHEADER: size, width, height (negative: top-down rows)
    data[i + 12:i + 20] = (16000).to_bytes(4, "little") + (-16000).to_bytes(4, "little", signed=True)
    path = tmp_path / "huge.avi"
    path.write_bytes(bytes(data))
    assert (probe(path).width, probe(path).height) == (16000, 16000)
    with pytest.raises(MediaError) as info:
        next(iter_frames(path))
    assert info.value.reason == "too_large" and str(path) in str(info.value)
    assert exercise(bytes(data), ".avi") in ("corrupt_media", "too_large")


def test_every_ffmpeg_call_has_a_timeout() -> None:
    """subprocess.run / check_output / call in the package all pass timeout=. (The in-process frame
    decoder has its own stall limit: test_media's ``test_decode_stall_timeout_stops_the_decoder``.)"""
    missing = []
    for path in [p for d in ("core", "pipeline", "extractors") for p in sorted((REPO / d).rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess" and \
                    node.func.attr in ("run", "check_output", "check_call", "call"):
                if "timeout" not in {k.arg for k in node.keywords}:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert missing == []
