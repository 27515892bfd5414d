"""Extraction cost of ``whisper_enc`` alone and next to speech recognition, on real speech clips.

Per clip, in one process (models loaded and warmed up first, so load time is not counted), wall
seconds of: whisper_enc (``pad`` False, the default, and True; ``layer=2``, the torch port up to block 2,
which the shipped voice bundle reads); ASR alone (the shipped multilingual
base model with language detection, and tiny.en, the default recogniser); and ASR followed by
whisper_enc on the same clip, where the padded variant reuses the encoder output of the base
model's language detection (``clip.memo``) and the encoder runs once. CTranslate2 encoder runs are
counted (the port's are not: ``layer=2`` shares nothing with ASR).

    python bench/whisper_enc.py [--clips FILE ...] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import faster_whisper

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_CLIPS = ("emotion/ravdess/Actor_21/03-01-05-02-01-01-21.flac",
                 "emotion/ravdess/Actor_22/03-01-03-01-02-01-22.flac",
                 "audio/radio_speech_a.wav", "audio/si_la_dictee_fr.aiff")
ENCODES = [0]


def _count_encodes() -> None:
    real = faster_whisper.WhisperModel.encode

    def counting(self: Any, features: Any) -> Any:
        ENCODES[0] += 1
        return real(self, features)

    faster_whisper.WhisperModel.encode = counting  # type: ignore[method-assign]


def timed(fn: Callable[[Any], Any], path: Path, repeat: int) -> tuple[float, float]:
    """Median wall seconds and encoder runs of ``fn(fresh clip)``."""
    from msa.pipeline.extract.clip_input import Clip

    walls, encodes = [], []
    for _ in range(repeat):
        clip = Clip.from_path(path)
        clip.audio()  # decoding is not part of the cost
        e0, t0 = ENCODES[0], time.perf_counter()
        fn(clip)
        walls.append(time.perf_counter() - t0)
        encodes.append(ENCODES[0] - e0)
    return statistics.median(walls), statistics.median(encodes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", nargs="*", type=Path, default=[DATA / c for c in DEFAULT_CLIPS])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    _count_encodes()
    from msa.extractors.asr import WhisperASR
    from msa.extractors.whisper_enc import WhisperEnc
    from msa.extractors.whisper_models import base_dir

    base = str(base_dir())
    enc, enc_pad, enc_l2 = WhisperEnc(model=base), WhisperEnc(model=base, pad=True), WhisperEnc(model=base, layer=2)
    asr_base, asr_tiny = WhisperASR(model=base, language="auto"), WhisperASR(model="tiny.en")
    runs: dict[str, Callable[[Any], Any]] = {
        "whisper_enc": enc.extract,
        "whisper_enc pad": enc_pad.extract,
        "whisper_enc layer 2": enc_l2.extract,
        "asr base (detect)": asr_base.transcribe,
        "asr base + whisper_enc pad": lambda c: (asr_base.transcribe(c), enc_pad.extract(c)),
        "asr base + whisper_enc": lambda c: (asr_base.transcribe(c), enc.extract(c)),
        "asr tiny.en": asr_tiny.transcribe,
        "asr tiny.en + whisper_enc": lambda c: (asr_tiny.transcribe(c), enc.extract(c)),
        "asr tiny.en + whisper_enc layer 2": lambda c: (asr_tiny.transcribe(c), enc_l2.extract(c)),
    }
    for fn in runs.values():  # load and warm every model once
        timed(fn, args.clips[0], 1)
    from msa.extractors.audio import SR

    print(f"{'clip':40s} {'seconds':>7s}  " + "  ".join(f"{k:>26s}" for k in runs))
    for path in args.clips:
        from msa.pipeline.extract.clip_input import Clip

        dur = Clip.from_path(path).audio().size / SR
        cells = [timed(fn, path, args.repeat) for fn in runs.values()]
        print(f"{path.name[:40]:40s} {dur:7.2f}  " + "  ".join(f"{w:19.2f} s ({e:g} enc)" for w, e in cells),
              flush=True)


if __name__ == "__main__":
    main()
