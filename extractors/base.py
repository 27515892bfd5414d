"""The extractor contract: a name, a version, a frozen config, ``extract(clip) -> Features``.

Every array travels with its time axis. ``spec()`` describes the output exactly enough to key the
cache and to check, at prediction time, that a bundle's inputs are rebuilt the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from msa.core.config import Checked
from msa.core.hashing import json_sha256

MODALITIES = ("asr", "text", "audio", "visual")


@dataclass(frozen=True)
class FeatureSpec:
    """What an extractor produces. ``spec_hash`` covers name, version, config and weights identity."""

    name: str
    version: str
    modality: str
    config: dict[str, Any]
    dim: int
    columns: tuple[str, ...] = ()
    rate: float | None = None  # frames per second; None for token sequences
    weights: dict[str, Any] = field(default_factory=dict)  # package, version, file sha256 of weights

    @property
    def spec_hash(self) -> str:
        return json_sha256(
            {"name": self.name, "version": self.version, "config": self.config, "weights": self.weights}
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["columns"] = list(self.columns)
        d["spec_hash"] = self.spec_hash
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["columns"] = tuple(kw.get("columns", ()))
        return cls(**kw)


@dataclass
class Features:
    """A feature sequence: ``data`` (T, D) float32 with ``times`` (T,) in seconds.

    ``extra`` holds named side arrays (e.g. ``text_bert`` (3, L) int64, a per-frame face mask);
    ``meta`` holds small JSON-able facts (face_ratio, speech_seconds, truncation notes).
    """

    data: np.ndarray
    times: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        self.times = np.asarray(self.times, dtype=np.float64)
        if self.data.ndim != 2 or self.times.shape != (self.data.shape[0],):
            raise ValueError(f"Features need data (T, D) and times (T,), got {self.data.shape} and {self.times.shape}")


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...] = ()
    source: str = "given"  # given | label_csv | sidecar | asr:<name>
    language: str | None = None


class Extractor:
    """Base class. Subclasses set ``name``, ``version``, ``modality``, ``Config`` and implement ``extract``.

    Text extractors read ``clip.transcript``; audio ones ``clip.audio()`` (16 kHz mono float32);
    visual ones iterate ``clip.frames(fps)``. Heavy models load lazily on first use and are reused.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    modality: ClassVar[str]
    # Self-description, read by msa-doctor and the plot (no side tables elsewhere):
    packages: ClassVar[tuple[str, ...]] = ()  # import names this extractor needs at run time
    # what the plot can draw from the output: kind -> ((column, label or unit), ...), kinds:
    # "pitch" (unit "hz" or "semitones"), "loudness", "face" (AU proxies), "expression" (probabilities)
    plot_signals: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        """(present, where they are / what to supply) for the weights it loads, found without loading."""
        return True, "none needed"

    @dataclass(frozen=True)
    class Config(Checked):
        pass

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        cfg = config if config is not None else self.Config()
        self.config = dataclasses.replace(cfg, **overrides) if overrides else cfg

    def weights_identity(self) -> dict[str, Any]:
        """Package/version/sha256 of any pretrained weights; {} for weight-free extractors."""
        return {}

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        """(dim, column names, frame rate) of the output."""
        raise NotImplementedError

    def preload(self) -> None:
        """Import the backend and load what a forked process may share: nothing that starts threads.

        msa-extract calls it once before forking its ``--jobs`` workers, which then start warm. Loading
        that is not fork-safe (a model that owns threads) stays lazy, in ``extract``.
        """

    def spec(self) -> FeatureSpec:
        dim, columns, rate = self.describe()
        return FeatureSpec(
            name=self.name,
            version=self.version,
            modality=self.modality,
            config=dataclasses.asdict(self.config),
            dim=dim,
            columns=tuple(columns),
            rate=rate,
            weights=self.weights_identity(),
        )

    def extract(self, clip: "Any") -> Features:  # clip: msa.pipeline.extract.clip_input.Clip
        raise NotImplementedError
