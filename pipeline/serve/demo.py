"""``python -m msa.pipeline.serve.demo`` (``make demo``): build an example clip and run msa-predict on it.

The clip is made offline from two committed/bundled files: a 5 s English sentence synthesised with
espeak-ng (package data ``assets/example_speech.wav``, see ``assets/README.md``) and the Grace Hopper
portrait that ships with matplotlib (``mpl-data/sample_data/grace_hopper.jpg``), looped as video.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from msa.core.errors import MediaError, UsageError
from msa.pipeline.extract.media import ffmpeg_exe, probe

SPEECH_WAV = Path(__file__).resolve().parent / "assets" / "example_speech.wav"
SPEECH_TEXT = "I really love this movie. It is wonderful, and the acting is great."
FFMPEG_TIMEOUT_S = 120


def face_image() -> Path:
    """A frontal face photo shipped inside matplotlib (works offline)."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def make_example_clip(out: str | Path, speech: str | Path = SPEECH_WAV, fps: int = 10, repeat: int = 1) -> Path:
    """Write an H.264/AAC mp4: the face image held still while ``speech`` plays ``repeat`` times."""
    out, speech = Path(out), Path(speech)
    if not speech.is_file():
        raise UsageError(f"example speech not found: {speech} (package data missing: reinstall msa)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the looped image is cut to the speech's length itself: -shortest alone can overshoot by the
    # encoder's buffered frames when the machine is busy (a 5 s clip came out 6.4 s)
    seconds = probe(speech).duration * max(1, repeat)
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-loop", "1", "-framerate", str(fps), "-t", f"{seconds:.3f}", "-i", str(face_image()),
            "-stream_loop", str(max(0, repeat - 1)), "-i", str(speech),
            "-map", "0:v", "-map", "1:a", "-shortest", "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage",
            "-pix_fmt", "yuv420p", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:a", "aac", "-b:a", "64k", str(out)]
    try:
        subprocess.run(args, check=True, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.CalledProcessError as e:
        raise MediaError(f"ffmpeg could not build {out}: {e.stderr.decode(errors='replace').strip()[-300:]}") from e
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"ffmpeg timed out building {out}", reason="timeout") from e
    return out


def main(argv: list[str] | None = None) -> int:
    from msa.pipeline.cli import predict

    p = argparse.ArgumentParser(prog="python -m msa.pipeline.serve.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the clip and the plot")
    p.add_argument("--json", action="store_true", help="print JSON instead of the readable summary")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the shipped checkpoints/default)")
    args = p.parse_args(argv)
    try:
        clip = make_example_clip(args.out / "example.mp4")
    except (UsageError, MediaError) as e:
        print(f"demo: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    print(f"demo: example clip {clip} (speech: {SPEECH_TEXT!r}; face: matplotlib's grace_hopper.jpg)", flush=True)
    t0 = time.perf_counter()
    extra = [*(["--json"] if args.json else []), *(["--bundle", args.bundle] if args.bundle else [])]
    rc = predict.main([str(clip), "--plot", str(args.out / "example.png"), *extra])
    print(f"demo: msa-predict finished in {time.perf_counter() - t0:.1f} s (exit code {rc})", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
