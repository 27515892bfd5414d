"""The encoder of a CTranslate2 Whisper model in torch, for the states of its inner blocks.

CTranslate2 returns only the encoder's output (after the final layer norm). Speech emotion is carried
better, and depends less on what is said, a few blocks earlier (``docs/benchmarks.md``, "Voice affect"),
so ``whisper_enc`` with ``layer`` = k reads the residual stream after block k from this port. It reads the
weights straight from the same ``model.bin`` faster-whisper loads (float32, float16, bfloat16 or
int8/int16 with per-row scales), runs float32, on CUDA when torch sees a GPU, and stops after block k.

CTranslate2's binary model layout (versions 4-6), little endian: uint32 version, string spec name,
uint32 revision, uint32 count, then per variable: string name, uint8 rank, uint32 dims[rank], uint8
dtype, uint32 byte count, the bytes; then uint32 count and (alias, target) string pairs. A string is a
uint16 byte count and that many bytes, NUL-terminated.
"""
from __future__ import annotations

import functools
import re
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

from msa.core.errors import ExtractionError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}  # 5: bfloat16 bits


def read_variables(path: str | Path, keep: Callable[[str], bool]) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the variables of a CTranslate2 ``model.bin`` whose names ``keep`` accepts, aliases resolved; every
    variable's name). Only the kept ones are read: the file is walked with seeks, not mapped whole."""
    with open(path, "rb") as fh:

        def take(fmt: str) -> tuple[Any, ...]:
            size = struct.calcsize("<" + fmt)
            raw = fh.read(size)
            if len(raw) < size:
                raise ExtractionError(f"whisper_enc: {path} ends inside its variable table", reason="bad_weights")
            return struct.unpack("<" + fmt, raw)

        def string() -> str:
            return fh.read(take("H")[0]).rstrip(b"\0").decode("utf-8")

        (version,) = take("I")
        if not 4 <= version <= 6:
            raise ExtractionError(f"whisper_enc: {path} is CTranslate2 binary version {version}; this port reads 4-6",
                                  reason="bad_weights")
        string(), take("I")  # spec name, revision
        out: dict[str, np.ndarray] = {}
        names: list[str] = []
        for _ in range(take("I")[0]):
            name = string()
            names.append(name)
            (rank,) = take("B")
            dims = take(f"{rank}I") if rank else ()
            dtype, nbytes = take("BI")
            if not keep(name):
                fh.seek(nbytes, 1)
                continue
            if dtype not in _DTYPES:
                raise ExtractionError(f"whisper_enc: {path}: {name} has CTranslate2 dtype code {dtype}, which this "
                                      "port does not read", reason="bad_weights")
            arr = np.frombuffer(fh.read(nbytes), _DTYPES[dtype]).reshape(dims)
            out[name] = (arr.astype(np.uint32) << 16).view(np.float32) if dtype == 5 else arr
        count = fh.read(4)
        for _ in range(struct.unpack("<I", count)[0] if len(count) == 4 else 0):
            alias, target = string(), string()
            if keep(alias) and target in out:
                out[alias] = out[target]
    return out, names


def _weight(v: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A linear or conv weight as float32 (int8/int16 ones come with one scale per output row)."""
    w = v[f"{name}/weight"]
    if w.dtype in (np.int8, np.int16):
        return w.astype(np.float32) / v[f"{name}/weight_scale"].astype(np.float32).reshape(-1, *[1] * (w.ndim - 1))
    return w.astype(np.float32)


def block_count(model_bin: str | Path) -> int:
    """How many blocks the encoder in ``model_bin`` has (its variable table only is read)."""
    return _blocks(read_variables(model_bin, lambda name: False)[1])


def state_dim(model_bin: str | Path) -> int:
    """The width of the encoder's states (d_model), read from its final layer norm alone."""
    v, _ = read_variables(model_bin, lambda name: name == "encoder/layer_norm/gamma")
    return int(v["encoder/layer_norm/gamma"].shape[-1])


def _blocks(names: list[str]) -> int:
    """The encoder's block count, from a model's variable names."""
    return sum(1 for k in names if k.startswith("encoder/") and k.endswith("/ffn/linear_0/weight"))


class EncoderPort:
    """Whisper's encoder up to block ``blocks`` (all of them by default) as torch tensors."""

    def __init__(self, model_bin: str | Path, blocks: int | None = None, device: str = "cpu") -> None:
        import torch

        def wanted(name: str) -> bool:  # the encoder's variables, blocks past ``blocks`` left in the file
            block = re.match(r"encoder/layer_(\d+)/", name)
            return name.startswith("encoder/") and (block is None or blocks is None or int(block[1]) < blocks)

        v, names = read_variables(model_bin, wanted)
        self.n_blocks = _blocks(names)
        self.blocks = self.n_blocks if blocks is None else blocks
        if not 1 <= self.blocks <= self.n_blocks:
            raise ExtractionError(f"whisper_enc: layer {self.blocks} asked of an encoder with {self.n_blocks} blocks",
                                  reason="bad_config")
        self.device = device

        def t(a: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        def pair(name: str) -> tuple[Any, Any]:  # (weight, bias) of a linear or conv
            return t(_weight(v, name)), t(v[f"{name}/bias"])

        def norm(name: str) -> tuple[Any, Any]:
            return t(v[f"{name}/gamma"]), t(v[f"{name}/beta"])

        self.conv = [pair(f"encoder/conv{i}") for i in (1, 2)]
        self.positions = t(v["encoder/position_encodings/encodings"])
        self.heads = int(v["encoder/num_heads"])
        self.layers = []
        for i in range(self.blocks):
            att, ffn = f"encoder/layer_{i}/self_attention", f"encoder/layer_{i}/ffn"
            self.layers.append({"ln1": norm(f"{att}/layer_norm"), "qkv": pair(f"{att}/linear_0"),
                                "out": pair(f"{att}/linear_1"), "ln2": norm(f"{ffn}/layer_norm"),
                                "fc1": pair(f"{ffn}/linear_0"), "fc2": pair(f"{ffn}/linear_1")})
        self.final_norm = norm("encoder/layer_norm") if self.blocks == self.n_blocks else None

    def __call__(self, mel: np.ndarray, final_norm: bool = False) -> np.ndarray:
        """States (T/2, d) after the last block run, for one (80, T) mel with T even; ``final_norm`` (all
        blocks only): after the encoder's final layer norm, what CTranslate2's ``encode`` returns."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).reshape(1, -1, mel.shape[-1])
            x = F.gelu(F.conv1d(x.to(self.device), *self.conv[0], padding=1))
            x = F.gelu(F.conv1d(x, *self.conv[1], stride=2, padding=1))[0].T
            x = x + self.positions[: x.shape[0]]
            n, d = x.shape
            for p in self.layers:  # pre-norm blocks: x + attention(norm(x)), then x + mlp(norm(x))
                q, k, val = F.linear(F.layer_norm(x, (d,), *p["ln1"]), *p["qkv"]).view(
                    n, 3, self.heads, d // self.heads).permute(1, 2, 0, 3)
                a = F.scaled_dot_product_attention(q, k, val).transpose(0, 1).reshape(n, d)
                x = x + F.linear(a, *p["out"])
                x = x + F.linear(F.gelu(F.linear(F.layer_norm(x, (d,), *p["ln2"]), *p["fc1"])), *p["fc2"])
            if final_norm:
                if self.final_norm is None:
                    raise ValueError("final_norm needs the port built with all blocks")
                x = F.layer_norm(x, (d,), *self.final_norm)
            return x.float().cpu().numpy()


@functools.lru_cache(maxsize=2)
def load(model_bin: str, blocks: int) -> EncoderPort:
    """One port per (weights file, blocks) per process, on CUDA when torch sees a GPU."""
    import torch

    return EncoderPort(model_bin, blocks, "cuda" if torch.cuda.is_available() else "cpu")
