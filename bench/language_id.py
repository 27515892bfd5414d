"""Benchmark Whisper language detection: accuracy and seconds per clip, padded 30 s window vs unpadded speech.

Every speech file at hand, each with the language it is known to be in: ../shared/data/audio (en, fr,
zh), the 12 clips of ../shared/data/video (English), a sample of RAVDESS (English; ``--ravdess N`` files
spread over the actors), the demo's espeak-ng sentence, and sentences synthesised here with espeak-ng
in English, Mandarin, French, German, Spanish, Italian, Russian, Japanese and Portuguese (skipped
when espeak-ng is not installed). Methods (all on the multilingual base model, Silero VAD first):

  fw       faster-whisper's ``detect_language(vad_filter=True)``: the recogniser before this change
  pad30    msa's ``detect_language(seconds=0)``: the same padded 30 s window
  uN       the first N s of speech, unpadded, whatever the probability (``threshold=0``)
  msa      msa's default: unpadded first 10 s, the padded window when below 0.9 (``fallbacks`` counts those)

A clip whose VAD keeps no speech is skipped by msa (None: nothing to transcribe); ``fw``/``pad30``/``uN``
still answer for it, so the table counts such clips apart ("no speech").

    python bench/language_id.py [--data ../shared/data] [--methods fw pad30 u10 msa] [--ravdess 96]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [  # (espeak-ng voice, Whisper code, text)
    ("en", "en", "I really love this movie, it is wonderful and the acting is great."),
    ("en", "en", "The weather was terrible yesterday, so we stayed at home and read books."),
    ("cmn", "zh", "我非常喜欢这部电影，演员的表演很精彩。"),
    ("cmn", "zh", "今天天气很好，我们一起去公园散步吧。"),
    ("cmn", "zh", "这家餐厅的服务太差了，我再也不会来了。"),
    ("fr", "fr", "Je pense que ce film est vraiment magnifique et très émouvant."),
    ("fr", "fr", "Il fait beau aujourd'hui, allons nous promener dans le parc."),
    ("de", "de", "Ich finde diesen Film wirklich großartig und sehr spannend."),
    ("de", "de", "Das Wetter war gestern schrecklich, deshalb sind wir zu Hause geblieben."),
    ("es", "es", "Me encanta esta película, los actores son maravillosos."),
    ("es", "es", "Ayer llovió todo el día y nos quedamos en casa leyendo."),
    ("it", "it", "Questo film è davvero bellissimo e gli attori sono bravissimi."),
    ("ru", "ru", "Мне очень понравился этот фильм, актёры играли прекрасно."),
    ("ja", "ja", "この映画はとても面白くて、俳優の演技も素晴らしかったです。"),
    ("pt", "pt", "Eu gosto muito deste filme, os atores são excelentes."),
]
VIDEO_EXTS = {".mp4", ".mov", ".mpg"}


def files(data: Path, ravdess: int, work: Path) -> list[tuple[str, str, Path]]:
    """(group, expected language, path) for every speech file found."""
    out = [("audio", lang, data / "audio" / name) for name, lang in (
        ("one_two_three_en.wav", "en"), ("radio_speech_a.wav", "en"), ("radio_speech_b.wav", "en"),
        ("si_la_dictee_fr.aiff", "fr"), ("zh_short.flac", "zh"))]
    out += [("video", "en", p) for p in sorted((data / "video").iterdir()) if p.suffix in VIDEO_EXTS]
    folder = data / "emotion" / "ravdess"
    rav = sorted(folder.rglob("*.flac")) + sorted(folder.rglob("*.wav"))
    if rav and ravdess:
        step = max(1, len(rav) // ravdess)
        out += [("ravdess", "en", p) for p in rav[::step][:ravdess]]
    out.append(("espeak", "en", REPO / "pipeline" / "serve" / "assets" / "example_speech.wav"))
    if shutil.which("espeak-ng"):
        for i, (voice, lang, text) in enumerate(SENTENCES):
            path = work / f"{lang}_{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
            out.append(("espeak", lang, path))
    else:
        print("espeak-ng not installed: no synthesised sentences", flush=True)
    return [f for f in out if f[2].is_file()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--methods", nargs="+", default=["fw", "pad30", "u10", "msa"])
    p.add_argument("--ravdess", type=int, default=96, help="RAVDESS files, spread over the actors (0: none)")
    p.add_argument("--verbose", action="store_true", help="one line per file")
    args = p.parse_args(argv)
    from msa.extractors import asr, whisper_models
    from msa.pipeline.extract.clip_input import Clip

    work = Path(tempfile.mkdtemp(prefix="msa-lid-"))
    items = files(args.data, args.ravdess, work)
    audios = [Clip.from_path(path).audio(asr.SAMPLE_RATE) for _, _, path in items]
    print(f"{len(items)} files, {sum(a.size for a in audios) / asr.SAMPLE_RATE:.1f} s of audio; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    model = asr._load(str(whisper_models.base_dir()), *asr._device())
    asr.detect_language(model, audios[0], 0)  # warm up

    padded = {"n": 0}
    top = asr._top_language

    def counting(m: object, speech: np.ndarray, pad: bool) -> tuple[str, float, int]:
        padded["n"] += pad
        return top(m, speech, pad)

    asr._top_language = counting  # count the padded passes (fallbacks) of msa's default

    def detect(method: str, audio: np.ndarray) -> str:
        if method == "fw":
            return str(model.detect_language(audio, vad_filter=True)[0])
        if method == "pad30":
            return str(asr.detect_language(model, audio, 0))
        if method == "msa":
            return str(asr.detect_language(model, audio, no_speech=True))
        return str(asr.detect_language(model, audio, float(method[1:]), threshold=0.0))

    found: dict[str, list[str]] = {m: [] for m in args.methods}
    wall = {m: 0.0 for m in args.methods}
    cpu = {m: 0.0 for m in args.methods}
    fallbacks = 0
    for audio in audios:
        for m in args.methods:  # methods alternate per file, so load changes hit them alike
            before = padded["n"]
            t0, c0 = time.perf_counter(), time.process_time()
            found[m].append(detect(m, audio))
            wall[m] += time.perf_counter() - t0
            cpu[m] += time.process_time() - c0
            fallbacks += (padded["n"] - before) if m == "msa" else 0
    speech = [asr.first_speech(a, 1).size > 0 for a in audios]
    items = [(g if s else "no speech", lang, path) for (g, lang, path), s in zip(items, speech)]
    if args.verbose:
        for i, (group, lang, path) in enumerate(items):
            print(f"{group:8s} {path.name:32s} {audios[i].size / asr.SAMPLE_RATE:5.1f} s  expected {lang}: "
                  + " ".join(f"{m}={found[m][i]}" for m in args.methods))
    groups = [g for g in dict.fromkeys(g for g, _, _ in items) if g != "no speech"]
    n_speech = sum(speech)
    print(f"\nright answers (clips with speech only; {len(items) - n_speech} clips without speech left out)")
    print("\n| method | " + " | ".join(f"{g} (n={sum(1 for x in items if x[0] == g)})" for g in groups)
          + " | all | wall s (all clips) | CPU s | wall s per clip |")
    print("|---|" + "---:|" * (len(groups) + 4))
    for m in args.methods:
        right = [f == lang for f, (_, lang, _) in zip(found[m], items)]
        cells = [f"{sum(r for r, (g, _, _) in zip(right, items) if g == grp)}" for grp in groups]
        print(f"| {m} | " + " | ".join(cells) + f" | {sum(r for r, s in zip(right, speech) if s)}/{n_speech} | "
              f"{wall[m]:.1f} | {cpu[m]:.1f} | {wall[m] / len(items):.3f} |")
    for m in args.methods:
        wrong = [f"{path.name}: {f} (expected {lang})" for f, (g, lang, path) in zip(found[m], items)
                 if f != lang and g != "no speech"]
        print(f"{m} wrong: {'; '.join(wrong) or 'none'}")
        print(f"{m} on clips without speech: "
              + " ".join(f"{path.name}={f}" for f, (g, _, path) in zip(found[m], items) if g == "no speech"))
    if "msa" in args.methods:
        print(f"msa: padded-window fallbacks {fallbacks} of {sum(speech)} clips with speech")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
