"""msa-predict: raw clips -> score, label, transcript and the signals behind them.

    msa-predict CLIP [CLIP ...] [--bundle DIR] [--task sentiment|phq8] [--transcript FILE]
                [--json] [--plot out.png] [--cache DIR] [--language auto|en|zh|...] [--device auto]
                [--segments SECONDS]

The transcript comes from --transcript FILE, else a <clip>.txt/.srt/.vtt sidecar, else speech
recognition (offline Whisper: the language is detected, English goes to tiny.en, other languages to
the multilingual base model; --language CODE skips the detection). A bundle reads the start of a long
clip only (the output says how much); --segments SECONDS scores runs of about that much speech and
reports each, the clip's score being their mean weighted by length. A clip that cannot be scored
prints one error line naming the file; the other clips are still scored and the exit code is 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from msa.core.heap import keep_heap
from msa.pipeline.cli.common import run

PROG = "msa-predict"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("clips", nargs="+", metavar="CLIP", help="video or audio file(s)")
    p.add_argument("--bundle", type=Path, default=None, metavar="DIR",
                   help="bundle folder (bundle.json + weights.safetensors); default: the shipped one for --task")
    p.add_argument("--task", choices=("sentiment", "phq8"), default=None,
                   help="what to predict; must match the bundle (default: the bundle's task, or sentiment)")
    p.add_argument("--transcript", type=Path, default=None, metavar="FILE",
                   help="transcript (.txt/.srt/.vtt) for the clip instead of speech recognition (one clip only)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per clip")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                   help="draw the signals per clip (several clips: OUT_<clip>.png)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="reuse and fill an msa-extract output folder's feature cache")
    p.add_argument("--signals", default=None, metavar="MOD:NAME,...|none",
                   help="extractors run only to report/plot signals for modalities the bundle does not use "
                        "(default: the default recipe's audio and visual ones; 'none' skips them)")
    p.add_argument("--asr", default="whisper", metavar="NAME", help="speech recogniser (default whisper, offline)")
    p.add_argument("--language", default="auto", metavar="CODE",
                   help="spoken language: auto (detected per clip) or a Whisper code such as en, zh, fr")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--segments", type=float, default=0.0, metavar="SECONDS",
                   help="score runs of about SECONDS of speech each (cut at sentence ends and pauses) and give "
                        "their length-weighted mean as the clip's score (needs word times: speech recognition, "
                        "or an .srt/.vtt transcript)")
    p.add_argument("--no-affect", dest="affect", action="store_false",
                   help="skip the voice-emotion and face-expression readouts (reported beside the score)")
    return p


def parse_signals(value: str | None) -> tuple[tuple[str, str], ...]:
    """``audio:egemaps,visual:facemesh_au`` -> pairs; ``none`` -> (); None -> the default recipe's."""
    from msa.extractors import EXTRACTORS

    from msa.core.errors import UsageError
    from msa.pipeline.serve.predict import DEFAULT_SIGNALS

    if value is None:
        return DEFAULT_SIGNALS
    if value.strip().lower() == "none":
        return ()
    pairs = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        modality, sep, name = part.partition(":")
        if not sep or modality not in ("audio", "visual"):
            raise UsageError(f"--signals: expected audio:NAME or visual:NAME, got {part!r}")
        EXTRACTORS.get(name)  # unknown names: one line listing the valid ones
        pairs.append((modality, name))
    return tuple(pairs)


def _main(args: argparse.Namespace) -> int:
    from msa.core.errors import MsaError, UsageError
    from msa.pipeline.serve.predict import PredictOptions, Predictor, plot_paths, predict_json, resolve_bundle

    if args.transcript is not None and len(args.clips) > 1:
        raise UsageError("--transcript gives the text of one clip; pass one CLIP (or use <clip>.txt sidecars)")
    if args.transcript is not None and not args.transcript.is_file():
        raise UsageError(f"--transcript: no such file: {args.transcript}")
    for key, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(key, value)  # no weight-loading reports between the results
    options = PredictOptions(bundle=resolve_bundle(args.bundle, args.task), task=args.task, cache_dir=args.cache,
                             signals=parse_signals(args.signals), asr=args.asr, language=args.language,
                             device=args.device, affect=args.affect, segments=args.segments)
    plots = plot_paths(args.plot, args.clips) if args.plot else [None] * len(args.clips)
    failed = scored = 0
    with Predictor(options) as predictor:
        for clip, plot in zip(args.clips, plots, strict=True):
            try:  # the first clip scored carries the one-time load
                out = predict_json(predictor, clip, args.transcript, plot, with_load=not scored)
            except MsaError as e:
                failed += 1
                msg = e.one_line()
                print(f"{PROG}: error: {msg if clip in msg else f'{clip}: {msg}'}", file=sys.stderr, flush=True)
                continue
            scored += 1
            print(json.dumps(out) if args.json else _human(out), flush=True)
    return 1 if failed else 0


def _human(r: dict[str, Any]) -> str:
    """A short readable block per clip."""
    lo, hi = r["range"]
    mods = ", ".join(f"{m} {v:.2f}" for m, v in r["modalities"].items()) or "nothing (no score)"
    face = "no video" if r["face_ratio"] is None else f"{100 * r['face_ratio']:.0f}% of frames"
    speech = "n/a" if r["speech_seconds"] is None else f"{r['speech_seconds']:.1f} s"
    stages = ", ".join(f"{k} {v:.2f}" for k, v in r["timings"].items())
    from msa.pipeline.serve.affect import describe

    if r["score"] is None:
        head = f"{r['clip']}: no {r['task']} score ({', '.join(r.get('flags') or ()) or 'nothing to score'})"
    elif r.get("probabilities") is not None:
        ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
        head = (f"{r['clip']}: {r['label']} (probability {r['score']:.2f}, {r['task']})\n"
                f"  classes: {', '.join(f'{c} {p:.2f}' for c, p in ranked)}")
    else:
        head = f"{r['clip']}: {r['label']} (score {r['score']:+.2f} on [{lo:g}, {hi:g}], {r['task']})"
    lines = [
        head,
        f"  transcript ({r['transcript_source']}{', ' + r['language'] if r.get('language') else ''}): {r['transcript']!r}",
        f"  driven by: {mods}",
        f"  face: {face}; speech: {speech}",
        *describe(r.get("voice"), r.get("face")),
        f"  seconds: {stages}",
    ]
    if r.get("flags"):
        lines.append(f"  flags: {', '.join(r['flags'])}")
    if r.get("truncated"):
        units = {"text": "tokens"}
        n_cut = sum(1 for seg in r.get("segments") or () if seg.get("truncated"))
        where = f"the start of {n_cut} segment{'s' * (n_cut != 1)}" if r.get("segments") else "the start"
        lines.append(f"  read only {where}: " + ", ".join(
            f"{m} {read} of {of} {units.get(m, 'frames')}" for m, (read, of) in r["truncated"].items()))
    if r.get("segments"):
        lines.append(f"  segments ({len(r['segments'])}; the score is their mean, weighted by length):")
        for seg in r["segments"]:
            text = seg["text"] if len(seg["text"]) <= 60 else seg["text"][:57] + "..."
            cut = " (start only)" if seg.get("truncated") else ""
            lines.append(f"    {seg['start']:7.1f}-{seg['end']:.1f} s  {seg['score']:+.2f} {seg['label']}{cut}  {text!r}")
    if r.get("plot"):
        lines.append(f"  plot: {r['plot']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    keep_heap()
    return run(PROG, build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
