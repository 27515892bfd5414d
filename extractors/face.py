"""Shared helpers for the visual extractors: MediaPipe loading, the frame loop, face boxes, crops.

Face finding for ``fer_emotion`` uses MediaPipe's BlazeFace short-range detector, the same detector
that seeds ``facemesh_au``'s landmark model, so both extractors agree on which frames have a face.
On the shared real clips it is 10-30x faster than OpenCV's Haar cascade and, unlike the full-range
model, does not fire on the cartoon frames (see docs/extractors_visual.md).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import sys
import types
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from msa.core.errors import MissingBackendError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def package_version(dist: str) -> str:
    """Installed version of a distribution without importing it ("missing" when absent)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


# What ``import mediapipe`` loads that msa never uses (msa uses mp.solutions.face_mesh and face_detection
# only): the Tasks API (its audio part loads PortAudio through sounddevice), the drawing helpers (cv2,
# matplotlib.pyplot) and the other legacy solutions; together about 0.35 CPU-s per process.
_UNUSED_MEDIAPIPE = (
    "mediapipe.tasks", "mediapipe.tasks.python",
    *(f"mediapipe.python.solutions.{name}" for name in (
        "drawing_styles", "drawing_utils", "hands", "hands_connections", "holistic", "objectron", "pose",
        "selfie_segmentation")),
)


def import_mediapipe() -> Any:
    """Import mediapipe or raise a one-line MissingBackendError naming the package to install.

    Importing mediapipe also imports its Tasks API, drawing helpers (matplotlib.pyplot, cv2) and every
    legacy solution, none of which msa calls. Empty placeholder modules stand in for them (and for
    matplotlib, unless already loaded) during that import and are removed right after, so a later
    ``import mediapipe.tasks.python`` or ``import matplotlib.pyplot`` gets the real module.
    """
    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    names = [n for n in _UNUSED_MEDIAPIPE if n not in sys.modules]
    if "matplotlib" not in sys.modules:
        names += ["matplotlib", "matplotlib.pyplot"]
    stand_ins = {name: types.ModuleType(name) for name in names}
    for name, module in stand_ins.items():  # parent.child attributes, as a real import sets them
        parent, _, child = name.rpartition(".")
        if parent in stand_ins:
            setattr(stand_ins[parent], child, module)
    sys.modules.update(stand_ins)
    try:
        import mediapipe as mp
    except ImportError as e:
        raise MissingBackendError("mediapipe is not installed; pip install mediapipe==0.10.21") from e
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return mp


_apart: list[bool] = []  # set once Python's stderr no longer writes to fd 2 itself


def _python_stderr_apart() -> None:
    """Point Python's own stderr (print, warnings, logging's last-resort handler) at a duplicate of fd 2.

    Muting fd 2 is process-wide: while one thread runs the face mesh muted, another one's Python lines
    (a decoding warning, an error message) would be lost too. Once Python writes through its own copy
    of the descriptor, only what native code writes to fd 2 itself is muted. Done once; nothing changes
    where sys.stderr is not fd 2 (a test's capture, a redirected stream).
    """
    if _apart:
        return
    _apart.append(True)
    stream = sys.stderr
    try:
        if stream is None or stream.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):
        return
    stream.flush()
    sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(2), "w"), encoding=stream.encoding, errors=stream.errors,
                                  line_buffering=True, write_through=True)


@contextlib.contextmanager
def native_log_muted() -> Iterator[None]:
    """Send what native code writes straight to file descriptor 2 (MediaPipe's absl warnings, TFLite's
    "Created TensorFlow Lite XNNPACK delegate") to /dev/null meanwhile; Python exceptions still raise,
    and Python's own stderr lines, from any thread, still show (``_python_stderr_apart``).

    Those lines appear on every run and say nothing the user can act on; environment variables such as
    GLOG_minloglevel do not silence them in mediapipe 0.10.21. Costs three system calls per use.
    """
    _python_stderr_apart()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@dataclass(frozen=True)
class Frame:
    """One sampled RGB frame (H, W, 3) uint8 and its time in seconds."""

    image: np.ndarray
    time: float


def iter_frames(clip: Any, fps: float | None, max_side: int | None, batch: int = 32,
                reuse: bool = False) -> Iterator[Frame]:
    """Frames of ``clip`` resampled to ``fps`` (None: native rate), longest side capped at ``max_side``.

    ``reuse``: a frame's pixels are only valid until the next frame is asked for (the decoding buffers
    take turns); for callers that use each frame at once and keep nothing of it.
    """
    frames = clip.frames(fps=fps, batch=batch, max_side=max_side, reuse=True) if reuse else \
        clip.frames(fps=fps, batch=batch, max_side=max_side)
    for fb in frames:
        for image, t in zip(fb.frames, fb.times):
            yield Frame(np.ascontiguousarray(image), float(t))


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


class FaceBoxFinder:
    """Largest face box per RGB frame from MediaPipe BlazeFace; the detector is built once, lazily.

    Static per-frame detection: the result for a frame never depends on earlier frames or clips.
    Detections scoring below ``min_confidence`` are dropped here: MediaPipe 0.10.21 ignores its own
    ``min_detection_confidence`` option for this graph and keeps everything above 0.5.
    """

    def __init__(self, min_confidence: float = 0.5, full_range: bool = False) -> None:
        self.min_confidence = min_confidence
        self.full_range = full_range
        self._detector: Any = None

    def _get(self) -> Any:
        if self._detector is None:
            mp = import_mediapipe()
            with native_log_muted():
                self._detector = mp.solutions.face_detection.FaceDetection(
                    model_selection=1 if self.full_range else 0, min_detection_confidence=self.min_confidence
                )
        return self._detector

    def __call__(self, image: np.ndarray) -> Box | None:
        """The largest detected face as a pixel box clipped to the image, or None."""
        h, w = image.shape[:2]
        detector = self._get()
        with native_log_muted():
            result = detector.process(image)
        boxes: list[Box] = []
        for det in result.detections or ():
            if det.score[0] < self.min_confidence:  # the graph option alone does not filter (0.10.21)
                continue
            rb = det.location_data.relative_bounding_box
            x0, y0 = max(0.0, rb.xmin * w), max(0.0, rb.ymin * h)
            x1, y1 = min(float(w), (rb.xmin + rb.width) * w), min(float(h), (rb.ymin + rb.height) * h)
            if x1 > x0 and y1 > y0:
                boxes.append((x0, y0, x1, y1))
        return max(boxes, key=box_area) if boxes else None

    def __getstate__(self) -> dict[str, Any]:
        # the MediaPipe graph cannot be pickled (dask workers); it is rebuilt on first use
        return {**self.__dict__, "_detector": None}


def square_crop(gray: np.ndarray, box: Box, scale: float, shift_up: float, size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop of a square of side ``scale * max(w, h)`` centred on the box, moved up
    by ``shift_up * h``.

    Parts outside the image are filled by replicating the border, so faces at the edge keep their
    scale. Resizing is bilinear, as in fer's own preprocessing.
    """
    import cv2

    x0, y0, x1, y1 = box
    side = max(1, int(round(max(x1 - x0, y1 - y0) * scale)))
    left = int(round((x0 + x1) / 2.0 - side / 2.0))
    top = int(round((y0 + y1) / 2.0 - shift_up * (y1 - y0) - side / 2.0))
    h, w = gray.shape[:2]
    pad = max(0, -left, -top, left + side - w, top + side - h)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = gray[top + pad : top + pad + side, left + pad : left + pad + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
