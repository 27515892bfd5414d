"""``pyfeat_au``: py-feat's detector (20 AU probabilities, 7 emotions, head pose) on the largest face.

This is the OpenFace-style wrapper of the design card; ``facemesh_au`` is the offline default.
It uses py-feat 2.x ``Detectorv1`` with RetinaFace, MobileFaceNet landmarks, the XGBoost AU model,
ResMaskNet emotions and the landmark-to-pose MLP (identity and gaze models off).

py-feat fetches its weights from the Hugging Face hub into its ``resources`` folder on first use.
Here nothing is ever downloaded: every weight file is located first, in ``Config.weights_dir`` /
``$MSA_PYFEAT_WEIGHTS`` (a folder holding the files, or a Hugging Face cache layout such as a copy
of py-feat's ``resources`` folder after it has downloaded), py-feat's own ``resources`` and the
default Hugging Face cache; a missing file is a one-line ``MissingBackendError`` raised before
py-feat (a slow import) is loaded.
While py-feat runs, its hub download function is replaced by a local lookup. Note that py-feat
loads its AU model with skops trusting every type in the file: supply weight files you trust.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from msa.extractors.base import Extractor, Features
from msa.extractors.facemesh import FaceMeshAU
from msa.extractors.face import iter_frames, package_version
from msa.core.config import Checked, Fraction, Positive, Size
from msa.core.errors import MissingBackendError
from msa.core.hashing import weights_sha256

ENV_WEIGHTS = "MSA_PYFEAT_WEIGHTS"
AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12",
       "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43")
EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
POSE = ("Pitch", "Roll", "Yaw")  # degrees
COLUMNS = AUS + EMOTIONS + tuple(f"pose_{p.lower()}" for p in POSE) + ("face",)

# (repo, file names in py-feat's order of preference) that Detectorv1 loads in this configuration
REQUIRED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("py-feat/retinaface_r34", ("model.safetensors", "retinaface_r34.safetensors")),
    ("py-feat/mobilefacenet", ("mobilefacenet_model_best.pth.tar",)),
    ("py-feat/xgb_au", ("xgb_au_classifier_v2.skops", "xgb_au_classifier.skops")),
    ("py-feat/resmasknet", ("config.json",)),
    ("py-feat/resmasknet", ("ResMaskNet_Z_resmasking_dropout1_rot30.pth",)),
    ("py-feat/pose_mlp_v2", ("pose_mlp_v2.safetensors",)),
    ("py-feat/pose_mlp_v2", ("pose_mlp_v2.json",)),
)


def default_roots() -> list[Path]:
    """py-feat's ``resources`` folder (its own download cache, found without importing py-feat) and
    the default Hugging Face cache, where they exist."""
    from huggingface_hub import constants

    spec = importlib.util.find_spec("feat")
    found = [Path(r) / "resources" for r in ((spec.submodule_search_locations or []) if spec else [])]
    found.append(Path(constants.HF_HUB_CACHE))
    return [p for p in found if p.is_dir()]


def find_file(roots: list[Path], repo: str, name: str) -> Path | None:
    """``name`` of hub repo ``repo`` in a Hugging Face cache layout or flat (``root/name``) in any root."""
    from huggingface_hub import try_to_load_from_cache

    for root in roots:
        hit = try_to_load_from_cache(repo, name, cache_dir=str(root))
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
        for flat in (root / name, root / repo.split("/")[-1] / name):
            if flat.is_file():
                return flat
    return None


def resolve_weights(roots: list[Path]) -> dict[tuple[str, str], Path]:
    """The weight files py-feat will load, (repo, name) -> path; MissingBackendError listing what is missing."""
    found: dict[tuple[str, str], Path] = {}
    missing = []
    for repo, names in REQUIRED:  # the first name found is the one py-feat will load
        hit = next(((n, p) for n in names if (p := find_file(roots, repo, n)) is not None), None)
        if hit is None:
            missing.append(f"{repo}/{names[0]}")
        else:
            found[(repo, hit[0])] = hit[1]
    if missing:
        where = ", ".join(str(r) for r in roots) or "nowhere"
        raise MissingBackendError(
            f"py-feat weights not available offline (looked in {where}); missing {', '.join(missing)}; "
            f"set {ENV_WEIGHTS}=/folder holding these files (or a py-feat resources folder that has them)"
        )
    return found


@contextlib.contextmanager
def local_hub(roots: list[Path]) -> Iterator[None]:
    """Replace ``hf_hub_download`` in py-feat's modules (and huggingface_hub) by a lookup in ``roots``."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    def lookup(repo_id: str, filename: str, *args: Any, **kwargs: Any) -> str:
        path = find_file(roots, repo_id, filename)
        if path is None:  # py-feat then tries its fallback file name, or degrades (no pose)
            raise EntryNotFoundError(f"{repo_id}/{filename} is not available offline")
        return str(path)

    patched: list[tuple[Any, Any]] = []
    for name, module in list(sys.modules.items()):
        if (name == "feat" or name.startswith("feat.")) and hasattr(module, "hf_hub_download"):
            patched.append((module, module.hf_hub_download))
    patched.append((huggingface_hub, huggingface_hub.hf_hub_download))
    try:
        for module, _ in patched:
            module.hf_hub_download = lookup
        yield
    finally:
        for module, original in patched:
            module.hf_hub_download = original


class PyFeatAU(Extractor):
    """py-feat AU probabilities, emotion probabilities and head pose per sampled frame + a face flag."""

    name = "pyfeat_au"
    version = "1"
    modality = "visual"
    packages = ("torch", "feat")
    plot_signals = FaceMeshAU.plot_signals

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        try:
            files = cls().weight_files()
        except MissingBackendError as e:
            return False, e.one_line()
        return True, f"{len(files)} weight files found"

    @dataclass(frozen=True)
    class Config(Checked):
        fps: Positive = 5.0  # py-feat is slow on CPU (about a second per frame)
        max_side: Size | None = 640
        weights_dir: str | None = None  # else $MSA_PYFEAT_WEIGHTS; py-feat's resources + HF cache always
        face_detection_threshold: Fraction = 0.5
        batch_size: Size = 8

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._detector: Any = None
        self._files: dict[tuple[str, str], Path] | None = None
        self._identity: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_detector": None}

    def roots(self) -> list[Path]:
        given = self.config.weights_dir or os.environ.get(ENV_WEIGHTS)
        roots = [Path(os.path.expanduser(given))] if given else []
        if given and not roots[0].is_dir():
            raise MissingBackendError(f"py-feat weights folder not found: {roots[0]}; set {ENV_WEIGHTS} to a folder")
        return roots + default_roots()

    def weight_files(self) -> dict[tuple[str, str], Path]:
        if self._files is None:
            if importlib.util.find_spec("feat") is None:
                raise MissingBackendError("py-feat is not installed; pip install 'msa[pyfeat]'")
            self._files = resolve_weights(self.roots())
        return self._files

    def weights_identity(self) -> dict[str, Any]:
        if self._identity is None:
            files = self.weight_files()
            self._identity = {"package": "py-feat", "version": package_version("py-feat"),
                              "files": {f"{r}/{n}": weights_sha256(p) for (r, n), p in sorted(files.items())}}
        return self._identity

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return len(COLUMNS), COLUMNS, self.config.fps

    def _get_detector(self) -> Any:
        if self._detector is None:
            self.weight_files()  # every file located before the slow py-feat import
            import torch

            try:
                import feat.detector
            except ImportError as e:
                raise MissingBackendError(f"py-feat cannot be imported ({e}); pip install 'msa[pyfeat]'") from e
            if not hasattr(feat.detector, "Detectorv1"):
                found = package_version("py-feat")
                raise MissingBackendError(f"pyfeat_au needs py-feat 2.x (Detectorv1); found {found}")
            from huggingface_hub.errors import EntryNotFoundError

            device = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                with local_hub(self.roots()):
                    self._detector = feat.detector.Detectorv1(
                        face_model="retinaface", landmark_model="mobilefacenet", au_model="xgb",
                        emotion_model="resmasknet", identity_model=None, gaze_model=None, device=device,
                    )
            except EntryNotFoundError as e:  # a py-feat version that needs files not in REQUIRED
                raise MissingBackendError(f"py-feat weight file not available offline: {e}") from e
            except Exception as e:  # a damaged or foreign weight file: one line, not a traceback
                raise MissingBackendError(
                    f"py-feat could not load its weights ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    f"check the files in {ENV_WEIGHTS}"
                ) from e
        return self._detector

    def _rows(self, frames: np.ndarray) -> np.ndarray:
        """(n, len(COLUMNS)) for a batch of RGB frames: the largest face per frame, zeros when none."""
        import torch

        detector = self._get_detector()
        with local_hub(self.roots()):
            fex = detector.detect(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), data_type="tensor",
                                  batch_size=self.config.batch_size, progress_bar=False,
                                  face_detection_threshold=self.config.face_detection_threshold)
        out = np.zeros((len(frames), len(COLUMNS)), dtype=np.float32)
        values = fex[list(AUS + EMOTIONS + POSE)].to_numpy(dtype=np.float64)
        area = (fex["FaceRectWidth"] * fex["FaceRectHeight"]).to_numpy(dtype=np.float64)
        for i in range(len(frames)):
            rows = np.flatnonzero((fex["frame"].to_numpy() == i) & np.isfinite(area))
            if len(rows):
                best = values[rows[np.argmax(area[rows])]]
                out[i] = np.append(np.nan_to_num(best, nan=0.0), 1.0)
        return out

    def extract(self, clip: Any) -> Features:
        self._get_detector()
        chunks, times, pending = [], [], []
        for frame in iter_frames(clip, self.config.fps, self.config.max_side):
            pending.append(frame.image)
            times.append(frame.time)
            if len(pending) == self.config.batch_size:
                chunks.append(self._rows(np.stack(pending)))
                pending.clear()
        if pending:
            chunks.append(self._rows(np.stack(pending)))
        data = np.concatenate(chunks) if chunks else np.zeros((0, len(COLUMNS)), np.float32)
        face = data[:, -1]
        meta = {"face_ratio": float(face.mean()) if len(face) else 0.0, "n_frames": len(times)}
        return Features(data, np.asarray(times, dtype=np.float64), meta=meta)
