"""One PNG per clip: facial signals, voice pitch and loudness, and the recognised words on one time axis.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend state), so it works
headless and inside other programs. Rows appear only for the signals that were extracted. Words and
titles fall back to Noto Sans CJK (shipped by the ``cvttf-notosanscjk-regular`` package, or a CJK font
installed on the system) for characters DejaVu Sans lacks, so Chinese words are drawn, not boxes.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from msa.pipeline.serve.affect import draw_row, plot_rows as affect_rows


@functools.lru_cache(maxsize=None)
def declared(kind: str) -> tuple[tuple[str, str], ...]:
    """(column, label or unit) of every registered extractor's ``plot_signals[kind]``, deduplicated.

    Kinds: ``face`` (AU proxies), ``expression``, ``pitch`` (unit ``hz``/``semitones``), ``loudness``.
    The extractors describe themselves (extractors/base.py); the plot keeps no table of its own.
    """
    from msa.extractors import EXTRACTORS

    seen: dict[str, str] = {}
    for name in EXTRACTORS.names():
        for column, label in EXTRACTORS.get(name).plot_signals.get(kind, ()):
            seen.setdefault(column, label)
    return tuple(seen.items())


CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK JP", "Source Han Sans SC",
                "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "AR PL UMing CN")


@functools.lru_cache(maxsize=1)
def text_families() -> tuple[str, ...]:
    """Font families for text: DejaVu Sans, then a CJK font when one is available (matplotlib falls back
    per glyph along the list)."""
    from matplotlib import font_manager

    try:
        import cvttf_NotoSansCJK_Regular as packaged

        path = packaged.get_TTF_path()
        font_manager.fontManager.addfont(path)
        return ("DejaVu Sans", font_manager.FontProperties(fname=path).get_name())
    except (ImportError, FileNotFoundError, RuntimeError):
        pass
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *[f for f in CJK_FAMILIES if f in installed][:1])


def _column(signal: tuple[Any, tuple[str, ...]] | None, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    if signal is None:
        return None
    feats, columns = signal
    if name not in columns or feats.data.shape[0] == 0:
        return None
    return feats.times, feats.data[:, list(columns).index(name)].astype(np.float64)


def pitch_hz(signal: tuple[Any, tuple[str, ...]] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """F0 in Hz per frame, NaN where unvoiced (eGeMAPS' semitones from 27.5 Hz are converted)."""
    for name, unit in declared("pitch"):
        col = _column(signal, name)
        if col is not None:
            t, v = col
            hz = 27.5 * 2.0 ** (v / 12.0) if unit == "semitones" else v
            return t, np.where(v > 0, hz, np.nan)
    return None


def loudness(signal: tuple[Any, tuple[str, ...]] | None) -> tuple[np.ndarray, np.ndarray, str] | None:
    for name, label in declared("loudness"):
        col = _column(signal, name)
        if col is not None:
            return col[0], col[1], label
    return None


def _face_mask(visual: tuple[Any, tuple[str, ...]] | None) -> np.ndarray | None:
    col = _column(visual, "face")
    return None if col is None else col[1] > 0


def plot_prediction(pred: Any, out: str | Path) -> Path:
    """Write the signals of a :class:`~msa.pipeline.serve.predict.Prediction` to ``out`` (PNG); returns the path."""
    fig = draw(pred)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def draw(pred: Any) -> Any:
    """The figure: rows for facial AUs, expressions, voice and words, each only when its signal exists."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    visual, audio = pred.signals.get("visual"), pred.signals.get("audio")
    face = _face_mask(visual)
    aus = [(c, label, _column(visual, c)) for c, label in declared("face")]
    aus = [(c, label, col) for c, label, col in aus if col is not None]
    expr = [(e, _column(visual, e)) for e, _ in declared("expression")]
    expr = [(e, col) for e, col in expr if col is not None]
    f0, loud = pitch_hz(audio), loudness(audio)
    affect = affect_rows(getattr(pred, "affect", None))
    rows = [r for r, on in (("face", bool(aus)), ("expr", bool(expr)), ("voice", f0 is not None or loud is not None),
                            ("segments", bool(getattr(pred, "segments", None))), ("words", True)) if on]
    rows[-1:-1] = [f"affect{i}" for i in range(len(affect))]  # voice-emotion / face-expression rows
    heights = {"face": 2.2, "expr": 2.2, "voice": 2.2, "segments": 1.6, "words": 1.3,
               **{f"affect{i}": 1.8 for i in range(len(affect))}}
    fig = Figure(figsize=(10, sum(heights[r] for r in rows) + 0.8), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [heights[r] for r in rows]})[:, 0]
    end = max(pred.duration or 0.0, max((e for _, _, e in pred.words), default=0.0), 0.1)
    for ax, row in zip(axes, rows, strict=True):
        if row == "face":
            _plot_face(ax, aus, face, visual)
        elif row == "expr":
            for e, (t, v) in expr:
                ax.plot(t, np.where(face, v, np.nan) if face is not None else v, label=e, lw=1.2)
            ax.set_ylim(0, 1)
            ax.set_ylabel("expression p")
            ax.legend(loc="upper right", fontsize=7, ncol=4)
        elif row == "voice":
            _plot_voice(ax, f0, loud)
        elif row.startswith("affect"):
            draw_row(ax, *affect[int(row[len("affect"):])])
        elif row == "segments":
            _plot_segments(ax, pred)
        else:
            _plot_words(ax, pred)
        ax.grid(alpha=0.3)
    axes[-1].set_xlim(0, end)
    axes[-1].set_xlabel("time (s)")
    lo, hi = pred.range
    mods = ", ".join(f"{m} {v:.2f}" for m, v in pred.modalities.items())
    if pred.score is None:
        head = f"no score ({', '.join(pred.flags)})"
    else:
        what = f"probability {pred.score:.2f}" if pred.probabilities else f"score {pred.score:+.2f} on [{lo:g}, {hi:g}]"
        head = f"{pred.label}, {what}  (driven by {mods})"
    fig.suptitle(f"{Path(pred.clip).name}: {head}", fontsize=11, family=list(text_families()))
    fig.tight_layout()
    return fig


def _plot_face(ax: Any, aus: list[Any], face: np.ndarray | None, visual: Any) -> None:
    for _, label, (t, v) in aus:
        ax.plot(t, np.where(face, v, np.nan) if face is not None else v, label=label, lw=1.4)
    if face is not None and not face.all():
        t = visual[0].times
        ax.fill_between(t, 0, 1, where=~face, transform=ax.get_xaxis_transform(), color="grey", alpha=0.15,
                        label="no face", step="mid")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("face (AU proxy)")
    ax.legend(loc="upper right", fontsize=7)


def _plot_voice(ax: Any, f0: Any, loud: Any) -> None:
    if f0 is not None:
        ax.plot(f0[0], f0[1], ".", ms=2, color="tab:red", label="pitch F0 (Hz)")
        ax.set_ylabel("pitch (Hz)", color="tab:red")
    if loud is not None:
        ax2 = ax.twinx() if f0 is not None else ax
        ax2.plot(loud[0], loud[1], color="tab:blue", lw=0.8, alpha=0.8, label=loud[2])
        ax2.set_ylabel(loud[2], color="tab:blue")


def _plot_segments(ax: Any, pred: Any) -> None:
    """Each segment's score over its span (--segments), the clip's score dashed across."""
    probs = pred.probabilities is not None
    for seg in pred.segments:
        ax.plot([seg["start"], seg["end"]], [seg["score"]] * 2, color="tab:purple", lw=3, solid_capstyle="butt")
    ax.axhline(pred.score, color="tab:purple", lw=0.8, ls="--")
    lo, hi = (0.0, 1.0) if probs else pred.range
    ax.set_ylim(lo, hi)
    if not probs:
        ax.axhline((lo + hi) / 2, color="k", lw=0.6)
    ax.set_ylabel("top class p" if probs else "segment score")


def _plot_words(ax: Any, pred: Any) -> None:
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    if pred.words:
        for i, (w, s, e) in enumerate(pred.words):
            y = 0.7 if i % 2 == 0 else 0.3
            ax.plot([s, e], [y - 0.15, y - 0.15], color="tab:green", lw=3, solid_capstyle="butt")
            ax.text((s + e) / 2, y, w, ha="center", va="center", fontsize=9, family=list(text_families()))
        ax.set_ylabel("words")
    else:
        text = pred.transcript or "(no speech recognised)"
        ax.text(0.01, 0.5, f"{pred.transcript_source} transcript (no word times): {text[:140]}",
                transform=ax.transAxes, va="center", fontsize=9, family=list(text_families()))
        ax.set_ylabel("text")
