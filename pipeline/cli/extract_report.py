"""msa-extract's progress display and final summary (counts, seconds per stage, real-time factor).

On a terminal there is one tqdm bar per stage; in logs (not a TTY) one plain line per clip, or one
every few seconds for big batches, so progress stays readable in CI and cluster logs.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from typing import IO, Any

from msa.pipeline.extract.runner import STAGES

_LINE_EVERY_S = 5.0
_PER_CLIP_LINES_UP_TO = 100


class Progress:
    """Per-stage progress from finished-clip records (stages run inside each clip task)."""

    def __init__(self, total: int, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.counts: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self._last = 0.0
        self._bars: dict[str, Any] = {}
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bars = {s: tqdm(total=total, desc=f"{s:<10}", position=i, file=self.stream, leave=True,
                                  unit="clip", dynamic_ncols=True) for i, s in enumerate(STAGES)}

    def update(self, rec: Any) -> None:
        self.done += 1
        self.counts[rec.status] += 1
        for stage, s in rec.seconds.items():
            self.seconds[stage] += s
        if not self.enabled:
            return
        if self._bars:
            for stage, bar in self._bars.items():
                bar.update(1)
                bar.set_postfix_str(f"{self.seconds[stage]:.1f}s", refresh=False)
            return
        now = time.monotonic()
        if self.total <= _PER_CLIP_LINES_UP_TO or now - self._last >= _LINE_EVERY_S or self.done == self.total:
            self._last = now
            stages = " ".join(f"{k} {v:.2f}s" for k, v in rec.seconds.items() if v >= 0.005)
            what = rec.error["reason"] if rec.error else rec.status
            print(f"[{self.done}/{self.total}] {what:<10} {rec.item.id}  {stages}", file=self.stream, flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars = {}


def summarize(records: list[Any], wall: float, assemble_s: float = 0.0) -> dict[str, Any]:
    """Counts, seconds per stage, media seconds and the real-time factor, as a JSON-able dict."""
    status = Counter(r.status for r in records)
    seconds: Counter[str] = Counter()
    for r in records:
        seconds.update(r.seconds)
    media = sum(r.duration for r in records if r.error is None)
    flags: Counter[str] = Counter(f for r in records for f in r.flags)
    reasons = Counter(r.error["reason"] for r in records if r.error)
    return {
        "clips": {"ok": status["extracted"] + status["cached"], "extracted": status["extracted"],
                  "cached": status["cached"], "failed": status["failed"]},
        "failed_by_reason": dict(reasons),
        "flags": dict(flags),
        "flagged": {r.item.id: list(r.flags) for r in records if r.flags},
        "stage_seconds": {s: round(seconds[s], 4) for s in STAGES if s in seconds},
        "assemble_seconds": round(assemble_s, 4),
        "wall_seconds": round(wall, 4),
        "media_seconds": round(media, 4),
        "rtf": round(wall / media, 4) if media else None,
    }


def summary_table(records: list[Any], wall: float, total: int, assemble_s: float = 0.0) -> str:
    """The human-readable summary printed at the end of a run."""
    s = summarize(records, wall, assemble_s)
    c = s["clips"]
    media = s["media_seconds"]
    lines = [
        f"clips: {total} total, {c['ok']} ok ({c['extracted']} extracted, {c['cached']} cached), {c['failed']} failed"
        + (f" [{', '.join(f'{k} {v}' for k, v in s['failed_by_reason'].items())}]" if c["failed"] else ""),
    ]
    if s["flags"]:
        lines.append("flagged (kept, not errors): " + ", ".join(f"{k} {v}" for k, v in s["flags"].items()))
    lines.append(f"{'stage':<12}{'seconds':>10}{'s / media s':>14}")
    for stage, sec in [*s["stage_seconds"].items(), ("assemble", s["assemble_seconds"])]:
        per = f"{sec / media:.3f}" if media else "-"
        lines.append(f"{stage:<12}{sec:>10.2f}{per:>14}")
    rtf = f"{s['rtf']:.3f}" if s["rtf"] is not None else "-"
    lines.append(f"media {media:.1f} s, wall {wall:.1f} s, real-time factor {rtf} (wall / media duration)")
    return "\n".join(lines)
