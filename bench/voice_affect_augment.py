"""Augmented copies of RAVDESS training clips for the voice-affect bundle (issue 13), written outside the repo.

Each clip of the given actors gets ``--copies`` altered copies, each a random chain (seeded by the clip
name and copy number, so a rerun writes the same audio): synthetic room reverb (p 0.5: an exponentially
decaying noise impulse response, RT60 0.2-0.9 s), a telephone band (p 0.2: 300-3400 Hz band-pass), speed
perturbation (p 0.4: resampling by 0.9 or 1.1, which moves tempo and pitch together, as Kaldi's speed
perturbation does) and additive white or pink noise (p 0.7, SNR 5-20 dB). The copies keep their actor, so
grouped cross-validation keeps an actor's originals and copies in one fold. Output: ``label.csv`` + ``Raw/``
(16 kHz WAV), the tree ``msa-extract`` reads; ``mode`` is ``train`` for every copy. Given the tree of
``checkpoints/ravdess.py`` as ``out``, the copies are added to it (its rows kept, earlier copies
replaced). Never commit the output: it is RAVDESS audio (CC BY-NC-SA 4.0).

    .venv/bin/python bench/voice_affect_augment.py ../shared/data/emotion/ravdess /tmp/ravdess_ds --actors 1-20
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from ravdess import parse_name  # noqa: E402 - the label parser of the dataset builder

SR = 16000


def _rng(name: str, copy: int) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{name}#{copy}".encode()).digest()[:8], "little"))


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Convolve with a synthetic room response: a direct path plus exponentially decaying noise (RT60 s)."""
    from scipy.signal import fftconvolve

    n = int(rt60 * SR)
    t = np.arange(n) / SR
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[: int(0.002 * SR)] = 0.0  # the first reflections arrive a little after the direct sound
    ir = 0.3 * ir / np.sqrt(np.sum(ir**2))
    ir[0] = 1.0
    y = fftconvolve(x, ir)[: x.size]
    return y * (np.sqrt(np.mean(x**2)) / max(np.sqrt(np.mean(y**2)), 1e-9))


def telephone(x: np.ndarray) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos"), x)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster: tempo and pitch move together."""
    from scipy.signal import resample_poly

    up, down = {0.9: (10, 9), 1.1: (10, 11)}[factor]
    return resample_poly(x, up, down)


def noise(x: np.ndarray, rng: np.random.Generator, snr_db: float, pink: bool) -> np.ndarray:
    """Add white or pink (1/f power) noise at ``snr_db`` relative to the clip's active (above -40 dB) samples."""
    n = rng.standard_normal(x.size)
    if pink:
        spec = np.fft.rfft(n)
        spec /= np.sqrt(np.maximum(np.arange(spec.size), 1))
        n = np.fft.irfft(spec, n=x.size)
    frame = 320
    energies = np.array([np.mean(x[i : i + frame] ** 2) for i in range(0, max(x.size - frame, 1), frame)])
    active = energies[energies > energies.max() * 1e-4]
    p_sig = float(np.mean(active)) if active.size else float(np.mean(x**2))
    return x + n * np.sqrt(p_sig / (10 ** (snr_db / 10)) / max(np.mean(n**2), 1e-12))


def augment(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """One random chain; returns the audio and the steps applied (at least one)."""
    steps: list[str] = []
    while not steps:
        if rng.random() < 0.5:
            rt = float(rng.uniform(0.2, 0.9))
            x, steps = reverb(x, rng, rt), steps + [f"reverb{rt:.2f}"]
        if rng.random() < 0.2:
            x, steps = telephone(x), steps + ["telephone"]
        if rng.random() < 0.4:
            f = float(rng.choice([0.9, 1.1]))
            x, steps = speed(x, f), steps + [f"speed{f}"]
        if rng.random() < 0.7:
            snr, pink = float(rng.uniform(5, 20)), bool(rng.random() < 0.5)
            x, steps = noise(x, rng, snr, pink), steps + [f"{'pink' if pink else 'white'}{snr:.0f}dB"]
    peak = np.max(np.abs(x))
    return (x * (0.95 / peak) if peak > 0.95 else x).astype(np.float32), steps


def actor_range(spec: str) -> set[int]:
    a, _, b = spec.partition("-")
    return set(range(int(a), int(b or a) + 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="the RAVDESS folder (Actor_01 ... Actor_24)")
    p.add_argument("out", type=Path, help="dataset folder to write (label.csv + Raw/); outside the repository")
    p.add_argument("--actors", default="1-20", help="actor range to augment (default 1-20: never the test actors)")
    p.add_argument("--copies", type=int, default=1)
    args = p.parse_args()
    import librosa
    import soundfile as sf

    actors = actor_range(args.actors)
    rows = []
    for path in sorted(args.src.glob("Actor_*/*.flac")):
        info = parse_name(path.stem)
        if int(info["actor"]) not in actors:
            continue
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        x = audio.mean(axis=1).astype(np.float64)
        if sr != SR:
            x = librosa.resample(x, orig_sr=sr, target_sr=SR)
        for c in range(args.copies):
            y, steps = augment(x, _rng(path.stem, c))
            clip_id = f"{path.stem}_aug{c}"
            dest = args.out / "Raw" / path.parent.name / f"{clip_id}.wav"
            dest.parent.mkdir(parents=True, exist_ok=True)
            sf.write(dest, y, SR, subtype="PCM_16")
            rows.append({"video_id": path.parent.name, "clip_id": clip_id, "label": "", "class": info["class"],
                         "text": info["text"], "mode": "train", "actor": info["actor"],
                         "intensity": info["intensity"], "augment": "+".join(steps)})
    if not rows:
        raise SystemExit(f"no RAVDESS files of actors {args.actors} under {args.src}")
    label = args.out / "label.csv"
    kept = []  # a tree of checkpoints/ravdess.py: its rows stay, earlier copies are replaced
    if label.exists():
        with open(label, newline="", encoding="utf-8") as f:
            kept = [r for r in csv.DictReader(f) if "_aug" not in r["clip_id"]]
    with open(label, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), restval="")
        w.writeheader()
        w.writerows(kept + rows)
    print(f"{len(rows)} augmented clips (+{len(kept)} rows kept) -> {label}")


if __name__ == "__main__":
    main()
