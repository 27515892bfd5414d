"""Raw clip -> score: the bundle's exact extractors, the model, and the signals a person wants to see.

A :class:`Predictor` loads a bundle once and predicts any number of clips. Per clip it runs the
extraction stages of :mod:`msa.pipeline.extract.runner` (so ``--cache DIR`` shares msa-extract's cache and
its keys), assembles the model batch exactly as training did (:func:`msa.pipeline.extract.assemble.assemble`,
padding to the bundle's lengths, the bundle's normalisation statistics), runs the model and reports:
score (clamped to the bundle's range), label, transcript, which modalities drove the score, the
share of frames with a face, seconds of speech and per-stage timings. A classification bundle (class
labels, ``msa-train --task classification``) reports its top class as the label, that class's
probability as the score (range [0, 1]) and every class's probability.

The audio and visual extractors of the ``default`` recipe run even for a text-only bundle: their
signals (face share, pitch, loudness, smile proxy) are reported and plotted, never fed to the model.
The voice and face affect readouts (:mod:`msa.pipeline.serve.affect`) are reported beside the score;
a clip without speech still gets them, with a null score and the ``no_speech`` flag.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from msa.extractors import RECIPES
from msa.extractors.base import Features

from msa.core.errors import BundleError, MediaError, MsaError, UsageError
from msa.core.labels import THREE_CLASS_NAMES, three_classes
from msa.core.modalities import TO_BATCH, TO_EXTRACT

from msa.checkpoints import shipped_bundle

DEFAULT_BUNDLES = {"sentiment": shipped_bundle("default"), "phq8": shipped_bundle("phq8")}
TASKS = tuple(DEFAULT_BUNDLES)
# |score| <= band is "neutral": MOSI/MOSEI ratings are averages of integers in [-3, 3] (a score that
# rounds to 0, as in Mult_acc_7). Custom ranges: 1/12 of the width. SIMS uses MMSA's 3-class bins
# (msa.core.labels), the same as its metrics and CLIP-CA-MSA's classes.
NEUTRAL_BAND = {"mosi": 0.5, "mosei": 0.5}
THREE_CLASS_TASKS = ("sims", "simsv2")
DEFAULT_SIGNALS = tuple((m, RECIPES["default"][m]) for m in ("audio", "visual"))
PHQ8_BANDS = ((4, "none"), (9, "mild"), (14, "moderate"), (19, "moderately severe"), (24, "severe"))
PHQ8_HINT = ("train one on AVEC2019-style sessions: msa-extract DATASET --recipe avec2019 --out feats/ && "
             "msa-train --data feats/features.pkl --dataset phq8 --model <model> --out checkpoints/phq8, "
             "then pass --bundle checkpoints/phq8")


CLASS_METRICS = ("classification", "binary")
FORWARD_CHUNK = 16  # entries (a long clip's runs) per forward pass, each with its occluded variants


def task_kind(name: str | None, metrics: str | None) -> str:
    """``phq8`` for a PHQ-8 task (by dataset name or metric family), ``classification`` for a class-label
    task, else ``sentiment``."""
    if metrics in CLASS_METRICS:
        return "classification"
    return "phq8" if "phq8" in (name, metrics) else "sentiment"


def resolve_bundle(bundle: str | Path | None, task: str | None) -> Path:
    """The bundle folder to use: ``--bundle`` or the shipped one for ``task`` (UsageError when absent)."""
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if bundle is not None:
        return Path(bundle)
    path = DEFAULT_BUNDLES[task or "sentiment"]
    if not (path / "bundle.json").is_file():
        if task == "phq8":
            raise UsageError(f"no PHQ-8 bundle available (looked for {path}); {PHQ8_HINT}")
        raise UsageError(f"the default bundle is missing ({path}); pass --bundle DIR or train one with msa-train")
    return path


def sentiment_label(score: float, task: Any) -> str:
    """negative / neutral / positive: SIMS' 3-class bins, else the neutral band of :data:`NEUTRAL_BAND`
    around the range's centre."""
    if task.name in THREE_CLASS_TASKS:
        return THREE_CLASS_NAMES[int(three_classes([score])[0])]
    centre = (task.low + task.high) / 2.0
    band = NEUTRAL_BAND.get(task.name, (task.high - task.low) / 12.0)
    if score - centre > band:
        return "positive"
    if score - centre < -band:
        return "negative"
    return "neutral"


def phq8_band(score: float) -> str:
    """PHQ-8 severity of the total rounded to the nearest integer: none 0-4, mild 5-9, moderate 10-14,
    moderately severe 15-19, severe 20-24."""
    total = int(math.floor(score + 0.5))
    return next((name for top, name in PHQ8_BANDS if total <= top), "severe")


def label_for(score: float, task: Any) -> str:
    return phq8_band(score) if task_kind(task.name, task.metrics) == "phq8" else sentiment_label(score, task)


def extractor_from_spec(spec: dict[str, Any] | None, modality: str, where: Path) -> Any:
    """Rebuild the extractor a bundle was trained with; BundleError when it no longer gives that spec."""
    from msa.extractors import EXTRACTORS

    from msa.core.config import ConfigError, from_mapping

    if not spec:
        raise BundleError(f"{where}: the bundle records no {modality} feature spec, so its inputs cannot be rebuilt;"
                          " retrain from a features file written by msa-extract")
    name = spec.get("name")
    if not isinstance(name, str) or name not in EXTRACTORS:
        raise BundleError(f"{where}: {modality} extractor {name!r} is unknown to this msa ({', '.join(EXTRACTORS.names())})")
    cls = EXTRACTORS.get(name)
    try:
        extractor = cls(from_mapping(cls.Config, spec.get("config") or {}))
        now = extractor.spec()
    except (ConfigError, TypeError, ValueError, AttributeError, ArithmeticError) as e:  # hand-edited spec config
        raise BundleError(f"{where}: {modality} extractor {name} cannot be rebuilt from the bundle's spec: "
                          f"{e.one_line() if isinstance(e, ConfigError) else f'{type(e).__name__}: {e}'}") from e
    if now.spec_hash != spec.get("spec_hash"):
        raise BundleError(
            f"{where}: {modality} extractor {name} now gives spec {now.spec_hash}, the bundle was trained on "
            f"{spec.get('spec_hash')} (version {spec.get('version')} -> {now.version}, weights "
            f"{'same' if now.weights == spec.get('weights') else 'differ'}); re-extract and retrain, or install "
            "the versions the bundle records")
    return extractor


@dataclass(frozen=True)
class PredictOptions:
    """What a prediction run uses; ``signals`` names the extractors run only to report signals."""

    bundle: Path
    task: str | None = None  # sentiment | phq8: must match the bundle's task when given
    cache_dir: Path | None = None  # msa-extract-style output folder whose cache/ is reused
    signals: tuple[tuple[str, str], ...] = DEFAULT_SIGNALS
    asr: str = "whisper"
    language: str = "auto"  # the recogniser's language: auto (detect) or a code (en, zh, ...)
    device: str = "auto"
    affect: bool = True  # voice-affect bundle and fer's face expressions, reported beside the score
    segments: float = 0.0  # > 0: score runs of about this many seconds of speech, and their mean (segments.py)


@dataclass
class Prediction:
    """One clip's result. ``signals`` (modality -> (Features, columns)) feed the plot, not the JSON."""

    clip: str
    task: str
    score: float | None  # None: nothing to score (e.g. no speech for a text bundle); see flags
    label: str | None
    transcript: str
    transcript_source: str
    modalities: dict[str, float]
    face_ratio: float | None
    speech_seconds: float | None
    timings: dict[str, float]
    range: tuple[float, float]
    words: tuple[tuple[str, float, float], ...] = ()
    flags: tuple[str, ...] = ()
    duration: float = 0.0
    language: str | None = None  # the transcript's language (ASR's detection; None for a given transcript)
    signals: dict[str, tuple[Features, tuple[str, ...]]] = field(default_factory=dict, repr=False)
    affect: Any = None  # msa.pipeline.serve.affect.Affect: voice/face readouts and their timelines
    probabilities: dict[str, float] | None = None  # class -> probability (classification bundles)
    truncated: dict[str, list[int]] = field(default_factory=dict)  # modality -> [read, of]: the model read the start
    segments: list[dict[str, Any]] | None = None  # with --segments: start, end, text, score, label per run

    def to_json(self) -> dict[str, Any]:
        score = None if self.score is None else round(self.score, 4)
        voice, face = (self.affect.voice, self.affect.face) if self.affect is not None else (None, None)
        out = {"clip": self.clip, "task": self.task, "score": score, "label": self.label, "voice": voice, "face": face,
               "transcript": self.transcript, "language": self.language, "modalities": self.modalities,
               "face_ratio": self.face_ratio, "speech_seconds": self.speech_seconds, "timings": self.timings,
               "transcript_source": self.transcript_source, "range": list(self.range), "flags": list(self.flags)}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.truncated:
            out["truncated"] = self.truncated
        if self.segments is not None:
            out["segments"] = self.segments
        return out


class Predictor:
    """Loads a bundle and its extractors once; ``predict(path)`` per clip (models stay loaded)."""

    def __init__(self, options: PredictOptions) -> None:
        t0 = time.perf_counter()  # "load": imports (torch, openSMILE), bundle, extractor specs
        from msa.extractors import EXTRACTORS

        from msa.pipeline.train.bundle import load_bundle, read_meta
        from msa.pipeline.extract.runner import ExtractorRef, Plan
        from msa.pipeline.train.trainer import resolve_device

        self.options = options
        meta = read_meta(options.bundle)
        kind = task_kind(meta["task"].get("name"), meta["task"].get("metrics"))
        if options.task is not None and options.task != kind:
            hint = f"; {PHQ8_HINT}" if options.task == "phq8" else ""
            raise UsageError(f"{options.bundle} is a {kind} bundle ({meta['task'].get('name')}), not {options.task}{hint}")
        self.used = [m for m in meta.get("modalities", ()) if m in TO_EXTRACT]
        if not self.used:
            raise BundleError(f"{options.bundle}: the bundle uses none of text/audio/vision")
        self.kind = kind
        self._check_segments(options.segments)
        feats = meta.get("features", {})
        extractors = {TO_EXTRACT[m]: extractor_from_spec((feats.get(m) or {}).get("spec"), m, options.bundle)
                      for m in self.used}
        for modality, name in options.signals:
            if modality not in extractors:
                extractors[modality] = EXTRACTORS.get(name)()
        asr_cls = EXTRACTORS.get(options.asr)
        if getattr(asr_cls, "modality", None) != "asr":
            raise UsageError(f"{options.asr!r} is a {asr_cls.modality} extractor, not a speech recogniser")
        asr_config = asr_config_for(asr_cls, options.language)
        self.specs = {m: e.spec().to_dict() for m, e in extractors.items()}
        self.text_extractor = extractors.get("text")  # --segments encodes each run's words with it
        self.device = resolve_device(options.device)
        self.bundle = load_bundle(options.bundle, current_specs={TO_BATCH[m]: self.specs[m] for m in extractors
                                                                 if TO_BATCH[m] in self.used},
                                  device=str(self.device))
        if options.affect:
            from msa.pipeline.serve.affect import AffectReader

            self.affect = AffectReader(device=str(self.device))
        else:
            self.affect = None
        self._tmp = None if options.cache_dir else tempfile.mkdtemp(prefix="msa-predict-")
        self.plan = Plan(
            out_dir=str(options.cache_dir or self._tmp),
            extractors=tuple(ExtractorRef(m, type(extractors[m]), extractors[m].config)
                             for m in ("text", "audio", "visual") if m in extractors),
            specs=self.specs, asr=ExtractorRef("asr", asr_cls, asr_config), missing="empty",
            main_pid=os.getpid(), overlap=(os.cpu_count() or 1) >= 2,
        )
        self.load_seconds = time.perf_counter() - t0

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_segments(self, seconds: float) -> None:
        from msa.pipeline.serve.segments import check_seconds

        if check_seconds(seconds) and self.kind == "phq8":
            raise UsageError("--segments: a PHQ-8 estimate is of a whole session, so it is not scored in segments")

    def predict(self, path: str | Path, transcript_file: str | Path | None = None,
                on_stage: Callable[[str], None] | None = None, segments: float | None = None) -> Prediction:
        """Score one clip; a typed MsaError (one line, naming the file) when it cannot be scored.

        ``on_stage(name)`` is called as each stage starts (the extraction stages, then ``model``).
        ``segments``: this clip's ``--segments`` seconds (0: whole clip), else the options' setting."""
        from msa.pipeline.extract.cache import FeatureCache
        from msa.pipeline.extract.runner import run_clip
        from msa.pipeline.extract.sources import Item

        t0 = time.perf_counter()
        seconds = self.options.segments if segments is None else segments
        self._check_segments(seconds)
        path = Path(path)
        if path.is_dir():
            raise MediaError(f"{path}: is a directory, not a media file", reason="not_found")
        if not path.is_file():
            raise MediaError(f"{path}: no such file", reason="not_found")
        given = None if transcript_file is None else Path(transcript_file)  # read like a sidecar, in its place
        item = Item(path.parent.name or ".", path.stem, path, label=0.0, transcript_file=given)
        source = "given" if given is not None else "sidecar" if item.sidecar is not None else "asr:" + self.options.asr
        # the affect readouts reuse the clip the extraction stages decoded (no second decode)
        rec = run_clip(0, item, self.plan, wait=True, on_stage=on_stage, keep_clip=self.affect is not None)
        if rec.status == "failed" or rec.entry is None:
            err = rec.error or {}
            msg = err.get("message", "failed")
            raise MsaError(f"{msg if str(path) in msg else f'{path}: {msg}'} (stage {err.get('stage', '?')})",
                           reason=err.get("reason", "extraction_failed"))
        entry = rec.entry
        cache = FeatureCache(self.plan.out_dir)
        feats = {m: cache.load(*ref) for m, ref in entry.refs.items()}
        for m in self.used:
            if feats.get(TO_EXTRACT[m]) is None:
                what = {"vision": "video stream", "audio": "audio stream", "text": "transcript"}[m]
                raise MediaError(f"{path}: the bundle needs a {what}, the clip has none", reason=f"no_{m}")
        affect = self.affect.read(path, clip=rec.clip) if self.affect is not None else None
        rec.clip = None  # its decoded audio and encoder outputs are not needed past the readouts
        timings = {k: round(v, 3) for k, v in rec.seconds.items()}
        timings.update(affect.seconds if affect is not None else {})
        task = self.bundle.task
        if "text" in self.used and not entry.transcript.strip():
            why = "has no audio stream to transcribe" if "no_audio" in entry.flags else "has no recognisable speech"
            if affect is None or affect.empty:  # nothing at all can be said about the clip
                raise MsaError(f"{path}: {why}, and the bundle scores the transcript; give one with --transcript "
                               "FILE or a <clip>.txt sidecar", reason="no_speech")
            score, label, scores, probs, out_range = None, None, None, None, (task.low, task.high)
            cut: dict[str, list[int]] = {}
            runs = None
        else:  # the voice/face readouts stand beside the score either way
            if on_stage is not None:
                on_stage("model")
            t1 = time.perf_counter()
            if seconds:
                scores, probs, cut, runs = self._score_segments(path, source, entry, feats, seconds)
            else:
                cut, runs = cut_inputs(self.bundle.model, feats, self.used), None
                scores, probs, _ = self._forward([entry], cache)
            timings["model"] = round(time.perf_counter() - t1, 3)
            score, label, out_range = self._headline(scores, probs)
        speech = self._speech_seconds(entry.words, path, source, timings)
        visual = feats.get("visual")
        timings["total"] = round(time.perf_counter() - t0, 3)
        return Prediction(
            clip=str(path), task=self.kind, score=score, label=label, transcript=entry.transcript,
            transcript_source=source, speech_seconds=speech, affect=affect,
            modalities={} if scores is None else _attribution(self.used, scores),
            face_ratio=None if visual is None else round(float(visual.meta.get("face_ratio", 0.0)), 4),
            timings=timings, range=out_range, words=entry.words,
            flags=entry.flags + tuple(f"{m}_truncated" for m in cut), truncated=cut, segments=runs,
            duration=rec.duration, language=entry.language,
            signals={m: (f, tuple(self.specs[m].get("columns", ()))) for m, f in feats.items() if m != "text"},
            probabilities=None if probs is None else {c: round(float(p), 4) for c, p in zip(task.classes, probs)},
        )

    # --- model ---------------------------------------------------------------------------------
    def _headline(self, scores: np.ndarray, probs: np.ndarray | None) -> tuple[float, str, tuple[float, float]]:
        """(score, label, range): the top class and its probability for a classification bundle, else the
        first score clamped to the task's range and its label."""
        task = self.bundle.task
        if probs is not None:
            return float(np.max(probs)), task.classes[int(np.argmax(probs))], (0.0, 1.0)
        score = float(np.clip(scores[0], task.low, task.high))
        return score, label_for(score, task), (task.low, task.high)

    def _forward(self, entries: list[Any], cache: Any,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Scores of the entries' weighted mean (one entry: the clip) and, for a multimodal bundle, of the
        same with each modality occluded; the mean class probabilities of a classification bundle (else
        None), whose scores are then the top class's probability; and each entry's own score (or class
        probabilities)."""
        import torch

        w = np.ones(1) if weights is None else np.asarray(weights, dtype=np.float64)
        parts = []
        for i in range(0, len(entries), FORWARD_CHUNK):  # a long clip's runs, a few at a time
            chunk = entries[i : i + FORWARD_CHUNK]
            batch = clip_batch(chunk, self.bundle, self.specs, self.used, cache)
            variants = [batch] + ([occlude(batch, m) for m in self.used] if len(self.used) > 1 else [])
            stacked = {k: torch.cat([b[k] for b in variants]).to(self.device) for k in batch}
            with torch.inference_mode():
                out = self.bundle.model(stacked)
            y = out["logits"].float().softmax(dim=-1) if self.bundle.task.is_classes else out["pred"].float()
            parts.append(y.reshape(len(variants), len(chunk), -1).cpu().numpy().astype(np.float64))
        each = np.concatenate(parts, axis=1)  # (variants, entries, classes or 1)
        mean = np.tensordot(each, w, axes=([1], [0]))  # (variants, classes or 1)
        if not self.bundle.task.is_classes:
            return mean[:, 0], None, each[0, :, 0]
        return mean[:, int(np.argmax(mean[0]))], mean[0], each[0]

    def _score_segments(self, path: Path, source: str, entry: Any, feats: dict[str, Any], seconds: float
                        ) -> tuple[np.ndarray, np.ndarray | None, dict[str, list[int]], list[dict[str, Any]]]:
        """:meth:`_forward` over the clip's runs of words (--segments); also the inputs read against
        those given, summed over the runs (where some were cut), and one dict per run."""
        from msa.pipeline.serve.segments import segment_entries, shares, split_words

        if not entry.words:  # a given transcript, or a clip where nothing was recognised
            why = (f"the {source} transcript has none (give it as .srt/.vtt, whose cues time the words, or leave it "
                   "out for speech recognition)" if entry.transcript.strip() else "no speech was recognised")
            raise MsaError(f"{path}: --segments cuts at word times, and {why}", reason="no_word_timings")
        runs = split_words(entry.words, seconds)
        entries, cache = segment_entries(entry, feats, runs, self.used, self.text_extractor)
        scores, probs, each = self._forward(entries, cache, shares(runs))
        totals: dict[str, list[int]] = {}
        out = []
        for run, e, own in zip(runs, entries, each, strict=True):
            reach = input_reach(self.bundle.model, {m: cache.load(*ref) for m, ref in e.refs.items()}, self.used)
            for m, (read, of) in reach.items():
                total = totals.setdefault(m, [0, 0])
                total[0], total[1] = total[0] + read, total[1] + of
            score, label, _ = self._headline(np.atleast_1d(own), own if probs is not None else None)
            item = {"start": round(run.start, 3), "end": round(run.end, 3), "text": e.transcript,
                    "score": round(score, 4), "label": label}
            if probs is not None:
                item["probabilities"] = {c: round(float(v), 4) for c, v in zip(self.bundle.task.classes, own)}
            cut = {m: v for m, v in reach.items() if v[0] < v[1]}
            out.append({**item, "truncated": cut} if cut else item)
        return scores, probs, {m: v for m, v in totals.items() if v[0] < v[1]}, out

    def _speech_seconds(self, words: tuple[tuple[str, float, float], ...], path: Path, source: str,
                        timings: dict[str, float]) -> float | None:
        """Union of the words' spans (recognised, or cue-timed from a subtitle file); for a transcript
        without word times Silero VAD."""
        if words or source.startswith("asr:"):
            return round(union_seconds([(s, e) for _, s, e in words]), 3)
        t0 = time.perf_counter()
        seconds = vad_speech_seconds(path)
        timings["vad"] = round(time.perf_counter() - t0, 3)
        return seconds


def asr_config_for(asr_cls: Any, language: str) -> Any:
    """The recogniser's config for ``--language`` (checked here, once); ``auto`` leaves its default."""
    import dataclasses

    if "language" in {f.name for f in dataclasses.fields(asr_cls.Config)}:
        return asr_cls(language=language).config
    if language != "auto":
        raise UsageError(f"--language: speech recogniser {asr_cls.name!r} has no language setting")
    return asr_cls.Config()


def clip_batch(entries: list[Any], bundle: Any, specs: dict[str, dict[str, Any]], used: list[str],
               cache: Any) -> dict[str, Any]:
    """The model batch (B = one per entry) built like training: assemble, pad to the bundle's lengths, normalise."""
    from msa.pipeline.extract.assemble import assemble
    from msa.pipeline.train.data import from_dict
    from msa.pipeline.train.loader import SplitDataset

    dims = bundle.dims
    length = {"text": dims.text_len, "audio": dims.audio_len, "vision": dims.vision_len}
    width = {"text": dims.text, "audio": dims.audio, "vision": dims.vision}
    model_specs = {TO_EXTRACT[m]: specs[TO_EXTRACT[m]] for m in used}
    raw = assemble(entries, model_specs, cache, has_modes=False,
                   max_len={TO_EXTRACT[m]: length[m] for m in used}, exact_len=True)
    split = raw["all"]
    for m in ("text", "audio", "vision"):
        if m in used:
            if m == "text" and "text_bert" in split and width[m] == 0:
                del split["text"]  # trained on token ids only (no text feature sequence)
                continue
            got = split[m].shape[2]
            if got != width[m]:
                raise BundleError(f"{bundle.path}: {m} features are {got}-d, the bundle was trained on {width[m]}-d")
        else:  # not an input of this bundle: a zero frame of the trained width
            split[m] = np.zeros((len(entries), max(1, length[m]), width[m]), dtype=np.float32)
            split[f"{m}_lengths"] = np.ones(len(entries), dtype=np.int64)
    fs = from_dict({"all": split})
    ds = SplitDataset(fs.split("all"), bundle.norm or None)
    batch = ds.__getitems__(list(range(len(entries))))
    batch.pop("labels", None)
    batch.pop("index", None)
    return batch


def input_reach(model: Any, feats: dict[str, Any], used: list[str]) -> dict[str, list[int]]:
    """{modality: [read, of]}: how much of each input the model reads (it scores the start only): text in
    tokens (the model's ``text_reach``), audio and vision in feature frames (the trained lengths)."""
    out = {}
    for m in used:
        f = feats[TO_EXTRACT[m]]
        if m == "text":
            read, total = model.text_reach(f.meta)
        else:
            total = len(f.data)
            read = min(total, getattr(model.dims, f"{m}_len"))
        out[m] = [int(read), int(total)]
    return out


def cut_inputs(model: Any, feats: dict[str, Any], used: list[str]) -> dict[str, list[int]]:
    """The inputs of :func:`input_reach` longer than the model reads."""
    return {m: v for m, v in input_reach(model, feats, used).items() if v[0] < v[1]}


def occlude(batch: dict[str, Any], modality: str) -> dict[str, Any]:
    """A copy of ``batch`` without ``modality``: zero features (the training mean after normalisation);
    for text also only the first token ([CLS]) left in ``text_bert``."""
    out = {k: v.clone() for k, v in batch.items()}
    if modality in out:
        out[modality].zero_()
    if modality == "text" and "text_bert" in out:
        out["text_bert"][:, :, 1:] = 0
    return out


def _attribution(used: list[str], scores: np.ndarray) -> dict[str, float]:
    """Share of the score change when each modality is occluded; a single-modality bundle is all that one."""
    if len(used) == 1:
        return {used[0]: 1.0}
    deltas = np.abs(scores[1:] - scores[0])
    total = float(deltas.sum())
    if total <= 0 or not math.isfinite(total):
        return {m: round(1.0 / len(used), 4) for m in used}
    return {m: round(float(d) / total, 4) for m, d in zip(used, deltas, strict=True)}


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` intervals."""
    total, end = 0.0, -math.inf
    for s, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def vad_speech_seconds(path: Path) -> float | None:
    """Seconds of speech by Silero VAD (the model ships inside faster-whisper); None without audio."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from msa.pipeline.extract.media import load_audio

    try:
        audio = load_audio(path, 16000)
    except MediaError as e:
        if e.reason == "no_audio":
            return None
        raise
    spans = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=300, speech_pad_ms=0))
    return round(sum(s["end"] - s["start"] for s in spans) / 16000.0, 3)


def plot_paths(plot: str | Path, clips: list[str]) -> list[Path]:
    """One PNG per clip: ``plot`` itself for one clip, ``<stem>_<clip stem>.png`` for several (unique)."""
    plot = Path(plot)
    if len(clips) == 1:
        return [plot]
    out, seen = [], set()
    for i, c in enumerate(clips):
        name = f"{plot.stem}_{Path(c).stem}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        out.append(plot.with_name(name + (plot.suffix or ".png")))
    return out


def predict_json(predictor: Predictor, clip: str | Path, transcript_file: str | Path | None = None,
                 plot: str | Path | None = None, *, with_load: bool = False,
                 on_stage: Callable[[str], None] | None = None, segments: float | None = None) -> dict[str, Any]:
    """One clip -> the JSON object that ``msa-predict --json`` prints and ``msa-serve`` returns.

    ``plot``: also draw the signals to this PNG (key ``plot``, timing ``plot``); ``with_load``: add the
    predictor's one-time load seconds (msa-predict does for the first clip scored); ``segments``: this clip's
    ``--segments`` seconds (msa-serve's per-request field), else the predictor's."""
    pred = predictor.predict(clip, transcript_file, on_stage=on_stage, segments=segments)
    if with_load:
        pred.timings["load"] = round(predictor.load_seconds, 3)  # imports, bundle, extractor specs
    if plot is not None:
        from msa.pipeline.serve.plot import plot_prediction

        if on_stage is not None:
            on_stage("plot")
        t0 = time.perf_counter()
        plot_prediction(pred, plot)
        pred.timings["plot"] = round(time.perf_counter() - t0, 3)
    out = pred.to_json()
    if plot is not None:
        out["plot"] = str(plot)
    return out
