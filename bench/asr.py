"""Benchmark the speech recognisers on the real clips in ../shared/data: speed and English WER.

For each recogniser setting (``tiny.en``; ``auto``: base detects the language, then tiny.en for English
and base for the rest; ``base`` alone) one process-wide model cache is warmed by the first clip
(reported as start-up), then every clip is transcribed. Prints per setting: start-up seconds,
median seconds per clip, RTF (all seconds incl. start-up / media seconds), the WER on the GRID
clips + one_two_three_en.wav, the detected languages, and the load average while it ran.

    python bench/asr.py [--data ../shared/data] [--models tiny.en auto base]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "extractors"))


def clips(data: Path) -> list[tuple[Path, str | None]]:
    """(clip, English reference or None): GRID clips, the English/French/Chinese/radio audio files."""
    with open(data / "video" / "grid_transcripts.csv", newline="") as fh:
        out: list[tuple[Path, str | None]] = [(data / "video" / r["file"], r["transcript"]) for r in csv.DictReader(fh)]
    out.append((data / "audio" / "one_two_three_en.wav", "one two three"))
    out += [(data / "audio" / n, None) for n in ("zh_short.flac", "si_la_dictee_fr.aiff", "radio_speech_a.wav",
                                                 "radio_speech_b.wav")]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--models", nargs="+", default=["tiny.en", "auto", "base"])
    args = p.parse_args(argv)
    from test_asr import normalise, wer  # the WER the tests use

    from msa.extractors.asr import WhisperASR
    from msa.pipeline.extract.clip_input import Clip

    items = clips(args.data)
    print(f"{len(items)} clips, {os.cpu_count()} CPUs", flush=True)
    for model in args.models:
        load0 = os.getloadavg()[0]
        ex = WhisperASR(model=model)
        media, seconds, errors, words, langs = 0.0, [], 0, 0, []
        for path, ref in items:
            clip = Clip.from_path(path)
            audio = clip.audio(16000)
            t0 = time.perf_counter()
            tr = ex.transcribe_audio(audio)
            seconds.append(time.perf_counter() - t0)
            media += audio.size / 16000
            langs.append(f"{path.stem}:{tr.language}")
            if ref is not None:
                e, n = wer(normalise(ref), normalise(tr.text))
                errors, words = errors + e, words + n
        print(f"{model}: start-up+first clip {seconds[0]:.2f} s; median per clip (rest) "
              f"{statistics.median(seconds[1:]):.2f} s; RTF {sum(seconds) / media:.3f} over {media:.1f} s; "
              f"English WER {errors / words:.3f} ({errors}/{words}); load avg {load0:.1f} -> {os.getloadavg()[0]:.1f}; "
              f"languages {' '.join(langs)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
