"""msa.pipeline.serve.segments: runs of words, frames shared out at the midpoints, in-memory entries."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from msa.core.errors import UsageError
from msa.extractors.base import Features
from msa.pipeline.serve.segments import Segment, check_seconds, segment_entries, shares, split_words


def _words(spec: list[tuple[str, float, float]]) -> tuple[tuple[str, float, float], ...]:
    return tuple(spec)


def test_runs_close_at_sentence_ends_and_pauses_once_long_enough() -> None:
    words = _words([("one", 0.0, 1.0), ("two.", 1.0, 2.0), ("three", 2.0, 3.0), ("four", 3.0, 4.0),
                    ("five", 4.5, 5.0), ("six", 5.0, 6.0), ("seven", 6.0, 7.0)])
    runs = split_words(words, 2.0)
    # "two." ends a sentence at 2 s; "four" is followed by a 0.5 s pause at 4 s; the rest is the tail
    assert [[w for w, _, _ in r.words] for r in runs] == [["one", "two."], ["three", "four"], ["five", "six", "seven"]]
    assert (runs[0].start, runs[0].end, runs[2].start, runs[2].end) == (0.0, 2.0, 4.5, 7.0)
    assert runs[0].text("en") == "one two." and Segment(0, 1, (("我", 0, 0.5), ("们", 0.5, 1))).text("zh") == "我们"


def test_a_run_without_a_natural_end_is_cut_at_one_and_a_half_targets() -> None:
    words = _words([(f"w{i}", float(i), float(i + 1)) for i in range(10)])  # no punctuation, no pauses
    runs = split_words(words, 2.0)
    assert [len(r.words) for r in runs] == [3, 3, 4]  # 3 s each; the last 1 s joins the run before
    assert sum(len(r.words) for r in runs) == 10


def test_a_short_clip_is_one_run_and_the_seconds_are_checked() -> None:
    words = _words([("hi", 0.0, 0.4), ("there", 0.5, 1.0)])
    assert len(split_words(words, 30.0)) == 1
    assert check_seconds(0.0) == 0.0 and check_seconds(2.5) == 2.5  # 0: off
    for bad in (-1.0, float("nan")):
        with pytest.raises(UsageError, match="positive number of seconds"):
            check_seconds(bad)


class _Text:
    """A text extractor stand-in: one row per word, valued by the word's length."""

    def extract(self, clip: SimpleNamespace) -> Features:
        words = clip.transcript.text.split()
        return Features(np.array([[len(w)] for w in words], dtype=np.float32), np.arange(len(words), dtype=float),
                        meta={"clip": clip.clip_id})


def _entry(words: tuple[tuple[str, float, float], ...]) -> SimpleNamespace:
    from msa.pipeline.extract.assemble import Entry
    from msa.pipeline.extract.sources import Item

    item = Item(".", "talk", None, text=None, label=0.0)
    refs = {"text": ("t", "h1", "k"), "audio": ("a", "h2", "k")}
    return Entry(item=item, refs=refs, lengths={}, transcript=" ".join(w for w, _, _ in words), words=words,
                 language="en")


def test_entries_share_frames_out_at_midpoints_and_encode_each_runs_words() -> None:
    words = _words([("good.", 0.0, 1.0), ("very", 1.4, 2.0), ("bad", 2.0, 3.0)])
    runs = [Segment(0.0, 1.0, words[:1]), Segment(1.4, 3.0, words[1:])]
    audio = Features(np.arange(30, dtype=np.float32)[:, None], np.arange(30) * 0.1)  # 10 frames a second
    entries, cache = segment_entries(_entry(words), {"audio": audio}, runs, ["text", "audio"], _Text())
    first, second = ([cache.load(*e.refs[m]) for m in ("text", "audio")] for e in entries)
    assert first[0].data[:, 0].tolist() == [5.0] and second[0].data[:, 0].tolist() == [4.0, 3.0]
    # the cut is at 1.2 s, halfway between the runs; frames before 0 s and after 3 s would count too
    assert first[1].times.max() < 1.2 <= second[1].times.min() and len(first[1].data) + len(second[1].data) == 30
    assert [e.transcript for e in entries] == ["good.", "very bad"] and entries[1].words == words[1:]
    assert entries[0].lengths == {"text": 1, "audio": 12} and first[0].meta["clip"] == f"{entries[0].item.id}#segment0"


def test_a_clip_level_vector_cannot_be_cut() -> None:
    words = _words([("a", 0.0, 1.0), ("b", 2.0, 3.0)])
    pooled = Features(np.ones((1, 4), dtype=np.float32), np.array([1.5]))
    runs = [Segment(0.0, 1.0, words[:1]), Segment(2.0, 3.0, words[1:])]
    with pytest.raises(UsageError, match="one vector per clip"):
        segment_entries(_entry(words), {"audio": pooled}, runs, ["audio"], _Text())


def test_shares_follow_the_runs_lengths() -> None:
    runs = [Segment(0.0, 1.0, ()), Segment(1.0, 4.0, ())]
    assert shares(runs).tolist() == [0.25, 0.75]
    assert shares([Segment(2.0, 2.0, ()), Segment(3.0, 3.0, ())]).tolist() == [0.5, 0.5]
