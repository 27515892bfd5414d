"""A long clip scored in segments: the transcript's timed words (recognised, or a subtitle file's) cut into
runs of about N seconds, each run scored by the bundle as a clip of its own, and the clip's score the
duration-weighted mean of the runs'.

A bundle reads the start of its inputs only (128 tokens of text for the default one, about 120 words
of English), so without segments the rest of a long clip does not count (msa-predict says so in
``truncated``). With ``--segments SECONDS`` each run gets the text extractor on its own words, and the
audio and visual feature frames whose times fall inside it; the batch is assembled, padded and
normalised as for a whole clip. Runs close at a sentence end or a pause once they span the target,
and at 1.5 times the target whatever comes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from msa.core.errors import UsageError
from msa.core.modalities import TO_EXTRACT
from msa.extractors.asr import NO_SPACE_LANGUAGES
from msa.extractors.base import Features, Transcript, Word

PAUSE_S = 0.3  # a gap between words this long ends a sentence as well as punctuation does
SENTENCE_ENDS = tuple(".!?;。！？；…")


def check_seconds(seconds: float) -> float:
    """``--segments`` (msa-predict, msa-serve and its per-request field): 0 (off) or a positive number of
    seconds; UsageError otherwise (NaN included)."""
    if not seconds >= 0:
        raise UsageError(f"--segments: expected a positive number of seconds (0: off), got {seconds:g}")
    return seconds


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    words: tuple[tuple[str, float, float], ...]

    def text(self, language: str | None) -> str:
        return ("" if language in NO_SPACE_LANGUAGES else " ").join(w for w, _, _ in self.words)


def split_words(words: tuple[tuple[str, float, float], ...], target_s: float) -> list[Segment]:
    """Consecutive runs of ``words`` (word, start, end): a run closes after a word ending a sentence or
    followed by a pause of :data:`PAUSE_S` once it spans ``target_s``, and after any word once it spans
    1.5 x ``target_s`` (> 0, :func:`check_seconds`). A last run of at most half the target joins the one
    before."""
    runs: list[list[tuple[str, float, float]]] = [[]]
    for i, w in enumerate(words):
        run = runs[-1]
        run.append(w)
        span = w[2] - run[0][1]
        gap = words[i + 1][1] - w[2] if i + 1 < len(words) else 0.0
        natural = w[0].endswith(SENTENCE_ENDS) or gap >= PAUSE_S
        if span >= 1.5 * target_s or (span >= target_s and natural):
            runs.append([])
    runs = [r for r in runs if r]
    if len(runs) > 1 and runs[-1][-1][2] - runs[-1][0][1] <= target_s / 2:
        runs[-2].extend(runs.pop())
    return [Segment(r[0][1], r[-1][2], tuple(r)) for r in runs]


def slice_rows(f: Features, start: float, end: float) -> Features:
    """The frames of ``f`` whose times fall in [start, end)."""
    keep = (f.times >= start) & (f.times < end)
    return Features(data=f.data[keep], times=f.times[keep], meta=dict(f.meta))


class MemoryCache:
    """What :func:`msa.pipeline.extract.assemble.assemble` reads of a feature cache, held in memory."""

    root = "(segments, in memory)"

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, str], Features] = {}

    def put(self, ref: tuple[str, str, str], feats: Features) -> tuple[str, str, str]:
        self._items[ref] = feats
        return ref

    def load(self, name: str, spec_hash: str, key: str) -> Features | None:
        return self._items.get((name, spec_hash, key))


def segment_entries(entry: Any, feats: dict[str, Features], segments: list[Segment], used: list[str],
                    text_extractor: Any) -> tuple[list[Any], MemoryCache]:
    """One assemble entry per segment (its own text features, its share of the audio and visual frames),
    and the in-memory cache they point into. Frames are shared out at the midpoints between segments, so
    every frame of the clip counts once. UsageError where a modality the bundle reads is one vector for
    the whole clip (it cannot be cut)."""
    cache = MemoryCache()
    cuts = [(a.end + b.start) / 2 for a, b in zip(segments, segments[1:])]
    bounds = list(zip([-np.inf, *cuts], [*cuts, np.inf]))
    out = []
    for i, seg in enumerate(segments):
        refs, lengths = {}, {}
        for m in used:
            name = TO_EXTRACT[m]
            ref = (*entry.refs[name][:2], f"{entry.refs[name][2]}#segment{i}")
            if m == "text":
                words = tuple(Word(w, s, e) for w, s, e in seg.words)
                transcript = Transcript(seg.text(entry.language), words, language=entry.language)
                f = text_extractor.extract(SimpleNamespace(clip_id=f"{entry.item.id}#segment{i}", transcript=transcript))
            else:
                whole = feats[name]
                if len(segments) > 1 and len(whole.data) <= 1:
                    raise UsageError(f"--segments: the bundle's {m} input is one vector per clip "
                                     f"({entry.refs[name][0]}), so it cannot be cut into segments")
                f = slice_rows(whole, *bounds[i])
            refs[name] = cache.put(ref, f)
            lengths[name] = len(f.data)
        out.append(replace(entry, refs=refs, lengths=lengths, transcript=seg.text(entry.language), words=seg.words))
    return out, cache


def shares(segments: list[Segment]) -> np.ndarray:
    """Each segment's weight in the clip's score: its span over the spans' sum (equal where all are 0)."""
    w = np.array([max(s.end - s.start, 0.0) for s in segments])
    w = w if w.sum() > 0 else np.ones(len(segments))
    return w / w.sum()
