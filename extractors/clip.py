"""``clip_vitb16``: CLIP ViT-B/16 image embeddings of a few frames per clip (CLIP-CA-MSA).

Each sampled frame goes through open_clip's evaluation preprocessing (bicubic resize of the short
side to 224, centre crop, CLIP mean/std) and the image tower; the output is the projected CLS
embedding (512-d), L2-normalised by default as CLIP compares images and texts by cosine.

Weights never download at run time. They come from ``Config.weights`` or else the environment
variable ``MSA_CLIP_WEIGHTS``: a checkpoint file (.safetensors/.bin/.pt, loaded strictly, pickles
with ``weights_only=True``) or an open_clip pretrained tag (``laion2b_s34b_b88k``, ``openai``) that
is already in the local Hugging Face / open_clip cache (a tag brings its QuickGELU and preprocessing
options). OpenAI's weights given as a file need ``arch = "ViT-B-16-quickgelu"``.
``random_init=True`` builds seeded random weights for tests; its spec says so.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from msa.extractors.base import Extractor, Features, FeatureSpec
from msa.extractors.face import Frame, iter_frames, package_version
from msa.core.config import Checked, Count, Positive, Size
from msa.core.errors import MissingBackendError, UsageError
from msa.core.hashing import weights_sha256

ENV_WEIGHTS = "MSA_CLIP_WEIGHTS"
_HINT = f"set {ENV_WEIGHTS}=/path/to/ViT-B-16 open_clip .safetensors/.bin (or a locally cached open_clip tag)"


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as e:
        raise MissingBackendError("open_clip is not installed; pip install 'msa[clip]' (open_clip_torch)") from e
    return open_clip


def cached_tag_file(arch: str, tag: str) -> tuple[Path | None, dict[str, Any]]:
    """(local checkpoint of an open_clip pretrained tag or None, the tag's model/preprocess options).

    Only looks in the caches open_clip would download into; never downloads.
    """
    open_clip = _import_open_clip()
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    opts = {"force_quick_gelu": bool(cfg.get("quick_gelu", False))}
    for key in ("mean", "std", "interpolation", "resize_mode"):  # as open_clip applies them for a tag
        if key in cfg:
            opts[f"image_{key}"] = cfg[key]
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, fname = os.path.split(cfg["hf_hub"])
        names = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit), opts
    if cfg.get("url"):
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if local.is_file():
            return local, opts
    return None, opts


class ClipViTB16(Extractor):
    """Projected CLS embeddings (512-d) of ``n_frames`` uniformly spaced frames, or of frames at ``fps``."""

    name = "clip_vitb16"
    version = "1"
    modality = "visual"
    packages = ("torch", "open_clip")

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        try:
            path, _ = cls().weights_file()
        except MissingBackendError as e:
            return False, e.one_line()
        return True, str(path)
    BATCH: ClassVar[int] = 16  # frames per forward pass

    @dataclass(frozen=True)
    class Config(Checked):
        arch: str = "ViT-B-16"  # open_clip model name ("ViT-B-16-quickgelu" for OpenAI's weights file)
        weights: str | None = None  # checkpoint path or cached open_clip tag; None: $MSA_CLIP_WEIGHTS
        random_init: bool = False  # seeded random weights (tests); the spec records "random-init"
        seed: Count = 0
        n_frames: Count = 6  # frames spread evenly over the clip (CLIP-CA-MSA); ignored when fps is set
        fps: Positive | None = None  # sample at a fixed rate instead
        normalize: bool = True  # L2-normalise each embedding
        max_side: Size | None = None  # decode size cap; None keeps CLIP's own resize exact

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.fps is None and self.config.n_frames < 1:
            raise UsageError("clip_vitb16 needs n_frames >= 1 or an fps")
        self._model: Any = None
        self._preprocess: Any = None
        self._resolved: tuple[Path | None, dict[str, Any]] | None = None
        self._sha256: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_preprocess": None}

    def weights_file(self) -> tuple[Path | None, dict[str, Any]]:
        """(checkpoint file, open_clip options of its tag); (None, {}) for random init.

        MissingBackendError when no weights are given or they are not on this machine.
        """
        if self.config.random_init:
            return None, {}
        if self._resolved is None:
            source = self.config.weights or os.environ.get(ENV_WEIGHTS)
            if not source:
                raise MissingBackendError(f"clip_vitb16 has no CLIP weights offline; {_HINT}")
            path = Path(os.path.expanduser(source))
            if path.is_file():
                self._resolved = (path, {})
            elif _import_open_clip().get_pretrained_cfg(self.config.arch, source):
                hit, opts = cached_tag_file(self.config.arch, source)
                if hit is None:
                    raise MissingBackendError(
                        f"open_clip tag {source!r} for {self.config.arch} is not in the local cache; {_HINT}"
                    )
                self._resolved = (hit, opts)
            else:
                raise MissingBackendError(f"CLIP weights not found: {source}; {_HINT}")
        return self._resolved

    def weights_identity(self) -> dict[str, Any]:
        ident = {"package": "open_clip_torch", "version": package_version("open_clip_torch"), "arch": self.config.arch}
        path, opts = self.weights_file()
        if path is None:
            return {**ident, "weights": "random-init", "seed": self.config.seed}
        if self._sha256 is None:
            self._sha256 = weights_sha256(path)
        return {**ident, "weights": path.name, "sha256": self._sha256, "tag_options": opts}

    def spec(self) -> FeatureSpec:
        # where the weights live is not part of the output's identity (their sha256 is)
        spec = super().spec()
        return dataclasses.replace(spec, config={**spec.config, "weights": None})

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        dim = 512
        if self.config.arch not in ("ViT-B-16", "ViT-B-16-quickgelu"):
            cfg = _import_open_clip().get_model_config(self.config.arch)
            if not cfg:
                raise UsageError(f"unknown open_clip arch {self.config.arch!r}")
            dim = int(cfg["embed_dim"])
        return dim, tuple(f"clip_{i:03d}" for i in range(dim)), self.config.fps

    def _get_model(self) -> tuple[Any, Any, Any]:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self._model is None:
            open_clip = _import_open_clip()
            path, opts = self.weights_file()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                try:
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        self.config.arch, pretrained=str(path) if path else None, **opts
                    )
                except Exception as e:  # strict load: wrong architecture, or a damaged/foreign file
                    raise MissingBackendError(
                        f"CLIP weights {path} do not fit {self.config.arch}: {str(e).splitlines()[0][:200]}"
                    ) from e
            self._model = model.visual.eval().to(device)
            self._preprocess = preprocess
        return self._model, self._preprocess, device

    def _frames(self, clip: Any) -> Iterator[Frame]:
        cfg = self.config
        if cfg.fps is not None:
            yield from iter_frames(clip, cfg.fps, cfg.max_side)
            return
        duration = float(clip.duration or 0.0)
        # decode at n / duration fps (about n frames), then keep n evenly spaced ones
        frames = list(iter_frames(clip, cfg.n_frames / duration if duration > 0 else None, cfg.max_side))
        if frames:
            yield from (frames[i] for i in np.round(np.linspace(0, len(frames) - 1, cfg.n_frames)).astype(int))

    def extract(self, clip: Any) -> Features:
        import torch
        from PIL import Image

        model, preprocess, device = self._get_model()
        chunks, times, pending = [], [], []

        def flush() -> None:
            batch = torch.stack([preprocess(Image.fromarray(im)) for im in pending]).to(device)
            with torch.inference_mode():
                emb = model(batch).float()
                if self.config.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
            chunks.append(emb.cpu().numpy())
            pending.clear()

        for frame in self._frames(clip):
            pending.append(frame.image)
            times.append(frame.time)
            if len(pending) == self.BATCH:
                flush()
        if pending:
            flush()
        data = np.concatenate(chunks) if chunks else np.zeros((0, self.describe()[0]), np.float32)
        return Features(data, np.asarray(times, dtype=np.float64), meta={"n_frames": len(times)})
