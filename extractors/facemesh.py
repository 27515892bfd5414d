"""``facemesh_au``: MediaPipe face mesh (478 landmarks) -> AU-style geometric proxies + head pose.

Per sampled frame, on the largest face:

1. the landmarks are put in a y-up, z-toward-camera frame (pixels) and a similarity transform
   (Umeyama) is fitted from rigid landmarks of MediaPipe's canonical face model (centimetres) onto them;
2. its rotation gives head pitch / yaw / roll; its inverse frontalises all landmarks into the
   canonical face frame, so the proxies below do not move with head pose;
3. each proxy is a distance in that frame divided by the inter-ocular distance (eye centre to eye
   centre), minus the value the canonical neutral face gets, so the canonical face scores 0
   (AU25 and AU45 are zero-based on their own). Formulas: docs/extractors_visual.md.

Frames without a face give zeros and ``face = 0``; never NaN. The face mesh tracks (MediaPipe's video
mode: the face detector runs only when the face is lost) and is restarted for every clip, so a clip's
features never depend on the clip before it.
"""
from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from msa.core.config import Checked, Fraction, Positive, Size
from msa.core.packages import shipped_files_status
from msa.extractors.base import Extractor, Features
from msa.extractors.face import box_area, import_mediapipe, iter_frames, native_log_muted, package_version

# Canonical face model of MediaPipe (mediapipe/modules/face_geometry/data/canonical_face_model.obj),
# in cm, y up, z toward the camera; the subject's right side has x < 0. Only the right half and the
# midline are listed: the model is mirror-symmetric and the left half is filled in through _PAIRS.
_CANON_RIGHT: dict[int, tuple[float, float, float]] = {
    0: (0.0, -3.406404, 5.979507), 1: (0.0, -1.126865, 7.475604), 2: (0.0, -2.089024, 6.058267),
    4: (0.0, -0.463170, 7.586580), 5: (0.0, 0.365669, 7.242870), 6: (0.0, 2.473255, 5.788627),
    9: (0.0, 4.885979, 5.385258), 10: (0.0, 8.261778, 4.481535), 13: (0.0, -3.994436, 5.219482),
    14: (0.0, -4.542400, 5.404754), 17: (0.0, -5.365123, 5.535441), 151: (0.0, 6.545390, 5.027311),
    152: (0.0, -9.403378, 4.264492), 168: (0.0, 3.271027, 5.236015), 195: (0.0, 1.059413, 6.774605),
    197: (0.0, 1.728369, 6.316750),
    33: (-4.445859, 2.663991, 3.173422), 133: (-1.856432, 2.585245, 3.757904),
    159: (-3.177186, 2.964136, 3.876973), 145: (-3.177186, 2.294265, 3.775704),
    160: (-3.670075, 2.927714, 3.724325), 144: (-3.670075, 2.360153, 3.635230),
    158: (-2.724032, 2.961810, 3.871767), 153: (-2.724032, 2.315802, 3.777151),
    70: (-5.720968, 4.254584, 2.830852), 63: (-4.985894, 4.802461, 3.751977),
    105: (-3.986562, 5.109487, 4.466315), 66: (-2.760292, 5.100971, 5.015990),
    107: (-1.395634, 5.011963, 5.316032), 46: (-5.253307, 3.881582, 3.363159),
    53: (-4.588603, 4.302037, 4.048484), 52: (-3.734964, 4.508230, 4.550454),
    65: (-2.644548, 4.524654, 4.921559), 55: (-1.220941, 4.142165, 5.106035),
    118: (-4.432338, 0.722096, 3.522615), 117: (-5.258659, 0.945811, 2.974312),
    61: (-2.456206, -4.342621, 4.283884), 98: (-1.405627, -1.714196, 5.241087),
    127: (-7.743095, 2.364999, -2.005167), 234: (-7.664182, 0.673132, -2.435867),
}
# subject's right -> left landmark index (MediaPipe face mesh topology)
_PAIRS: dict[int, int] = {
    33: 263, 133: 362, 159: 386, 145: 374, 160: 387, 144: 373, 158: 385, 153: 380,
    70: 300, 63: 293, 105: 334, 66: 296, 107: 336, 46: 276, 53: 283, 52: 282, 65: 295, 55: 285,
    118: 347, 117: 346, 61: 291, 98: 327, 127: 356, 234: 454,
}
# landmarks that barely move with expressions: forehead, nose, eye corners, face outline at the ears
RIGID = (1, 2, 4, 5, 6, 9, 10, 151, 168, 195, 197, 33, 263, 133, 362, 98, 327, 127, 356, 234, 454)

AU_COLUMNS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU10", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26", "AU45")
POSE_COLUMNS = ("pose_pitch", "pose_yaw", "pose_roll")
COLUMNS = AU_COLUMNS + POSE_COLUMNS + ("face",)

_INNER_BROW = (107, 66, 55, 65)
_OUTER_BROW = (70, 63, 46, 53)
_ALL_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
_UPPER_LID = (160, 159, 158)
_LOWER_LID = (144, 145, 153)
_CHEEK = (118, 117)


def canonical_mesh() -> np.ndarray:
    """(478, 3) canonical landmarks; rows this module does not use are NaN."""
    mesh = np.full((478, 3), np.nan)
    for i, p in _CANON_RIGHT.items():
        mesh[i] = p
        if i in _PAIRS:
            mesh[_PAIRS[i]] = (-p[0], p[1], p[2])
    return mesh


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst[n] ~ s[n] * R[n] @ src + t[n]`` (no reflection) for a stack of point
    sets ``dst`` (N, K, 3): returns s (N,), R (N, 3, 3), t (N, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(1)
    a, b = src - mu_s, dst - mu_d[:, None]
    u, sig, vt = np.linalg.svd(np.swapaxes(b, 1, 2) @ a / len(src))
    d = np.ones((len(dst), 3))
    d[np.linalg.det(u) * np.linalg.det(vt) < 0, 2] = -1.0
    rot = u @ (d[:, :, None] * vt)
    var_s = (a**2).sum() / len(src)
    s = (sig * d).sum(1) / var_s if var_s > 0 else np.zeros(len(dst))
    return s, rot, mu_d - s[:, None] * (rot @ mu_s)


def pose_angles(rot: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) in degrees, (N, 3), with ``rot[n] = Ry(yaw) @ Rx(-pitch) @ Rz(roll)`` (camera frame:
    y up, z to camera).

    pitch > 0: face turned up (chin up); yaw > 0: face turned toward the image's right (the subject's
    left); roll > 0: head tilted counter-clockwise as the viewer sees it (toward the subject's right
    shoulder). Exact for any rotation with |pitch| < 90.
    """
    yaw = np.arctan2(rot[:, 0, 2], rot[:, 2, 2])
    pitch = np.arctan2(rot[:, 1, 2], np.hypot(rot[:, 1, 0], rot[:, 1, 1]))
    roll = np.arctan2(rot[:, 1, 0], rot[:, 1, 1])
    return np.degrees(np.stack([pitch, yaw, roll], axis=1))


def _y(f: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    """Mean height of the given right-side landmarks and their left mirrors, per face of ``f`` (N, 478, 3)."""
    both = list(idx) + [_PAIRS[i] for i in idx]
    return f[:, both, 1].mean(1)


def raw_proxies(f: np.ndarray) -> np.ndarray:
    """The 12 distance measures (/ inter-ocular distance) and the eye aspect ratio, before offsets, (N, 13)."""
    eye_r, eye_l = f[:, [33, 133]].mean(1), f[:, [263, 362]].mean(1)
    iod = np.linalg.norm(eye_l - eye_r, axis=1)
    eye_line = (eye_r[:, 1] + eye_l[:, 1]) / 2.0
    inner_corner = _y(f, (133,))
    outer_corner = _y(f, (33,))
    inner_brow = _y(f, _INNER_BROW)
    brow_gap = abs(f[:, 55, 0] - f[:, 285, 0])
    mouth_w = abs(f[:, 291, 0] - f[:, 61, 0])
    corner_lift = _y(f, (61,)) - f[:, 0, 1]  # lip corners relative to the upper-lip centre
    upper = list(_UPPER_LID) + [_PAIRS[i] for i in _UPPER_LID]
    lower = list(_LOWER_LID) + [_PAIRS[i] for i in _LOWER_LID]
    lid_open = (f[:, upper, 1] - f[:, lower, 1]).mean(1)  # upper and lower lid points face each other
    eye_w = (abs(f[:, 133, 0] - f[:, 33, 0]) + abs(f[:, 263, 0] - f[:, 362, 0])) / 2.0
    ear = np.divide(lid_open, eye_w, out=np.zeros_like(lid_open), where=eye_w > 0)
    dist = np.stack(
        [
            inner_brow - inner_corner,                                  # AU01 inner brow raiser
            _y(f, _OUTER_BROW) - outer_corner,                          # AU02 outer brow raiser
            -(_y(f, _ALL_BROW) - eye_line) - 0.5 * brow_gap,            # AU04 brow lowerer
            _y(f, _UPPER_LID) - eye_line,                               # AU05 upper lid raiser
            (_y(f, _LOWER_LID) + _y(f, _CHEEK)) / 2.0 - eye_line,       # AU06 cheek raiser
            -(f[:, 2, 1] - f[:, 0, 1]),                                 # AU10 upper lip raiser
            corner_lift + 0.5 * mouth_w,                                # AU12 lip corner puller
            -corner_lift,                                               # AU15 lip corner depressor
            -(f[:, 17, 1] - f[:, 152, 1]),                              # AU17 chin raiser
            mouth_w,                                                    # AU20 lip stretcher
            np.maximum(0.0, f[:, 13, 1] - f[:, 14, 1]),                 # AU25 lips part
            f[:, 2, 1] - f[:, 152, 1],                                  # AU26 jaw drop
        ],
        axis=1,
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # iod 0: caught by face_features
        return np.concatenate([dist / iod[:, None], ear[:, None]], axis=1)  # AU45 slot: eye aspect ratio


_CANON_RAW = raw_proxies(canonical_mesh()[None])[0]
_OFFSET = _CANON_RAW.copy()
_OFFSET[10] = 0.0  # AU25 is zero-based: closed lips give 0 (AU45 is set in proxies())
_RIGID_CANON = canonical_mesh()[list(RIGID)]
USED = np.flatnonzero(np.isfinite(canonical_mesh()[:, 0]))  # the landmarks this module reads


def proxies(f: np.ndarray) -> np.ndarray:
    """The 13 AU proxies of frontalised landmarks (N, 478, 3); the canonical neutral face scores 0 (AU25: its lip gap)."""
    raw = raw_proxies(f)
    au = raw - _OFFSET
    au[:, 12] = 1.0 - raw[:, 12] / _CANON_RAW[12]  # AU45 blink: 1 - EAR / EAR of the canonical open eye
    return au


def face_features(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proxies + pose (N, 16) from landmarks (N, 478, 3) in a y-up, z-to-camera pixel frame, and which rows
    are valid (not degenerate). Computed for a stack of faces at once: per-frame NumPy calls cost more
    than the arithmetic."""
    s, rot, t = umeyama(_RIGID_CANON, pts[:, list(RIGID)])
    ok = s > 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        frontal = (pts - t[:, None]) @ rot / np.where(ok, s, 1.0)[:, None, None]
    eyes = np.linalg.norm(frontal[:, [263, 362]].mean(1) - frontal[:, [33, 133]].mean(1), axis=1)
    ok &= eyes > 1e-6
    rows = np.concatenate([proxies(frontal), pose_angles(rot)], axis=1)
    return rows, ok & np.all(np.isfinite(rows), axis=1)


def frame_features(pts: np.ndarray) -> np.ndarray | None:
    """Proxies + pose (16 values) from one face's landmarks (478, 3); None if degenerate."""
    rows, ok = face_features(pts[None])
    return rows[0] if ok[0] else None


def single_threaded(graph_config: Any) -> Any:
    """A MediaPipe CalculatorGraphConfig whose default executor runs on one thread.

    The face mesh sees one frame at a time (``_face_landmarks`` waits for the graph to be idle), so
    a pool of threads only hands the work back and forth: on the 1586 frames of the shared clips one
    thread took 5.2-5.3 CPU-s against 5.4-6.6 with the default pool (one thread per core), with the
    same landmarks, and less wall time too.
    """
    from mediapipe.framework import thread_pool_executor_pb2

    default = [ex for ex in graph_config.executor if not ex.name]
    if not default:
        graph_config.num_threads = 1
    for ex in default:
        ex.options.Extensions[thread_pool_executor_pb2.ThreadPoolExecutorOptions.ext].num_threads = 1
    return graph_config


@contextlib.contextmanager
def _single_threaded_graphs() -> Iterator[None]:
    """Meanwhile, MediaPipe solutions build their graph from ``single_threaded`` configs (SolutionBase
    builds and starts the graph in its constructor, with no option for it)."""
    from mediapipe.python import solution_base

    real = solution_base.calculator_graph
    solution_base.calculator_graph = types.SimpleNamespace(
        CalculatorGraph=lambda graph_config: real.CalculatorGraph(graph_config=single_threaded(graph_config)))
    try:
        yield
    finally:
        solution_base.calculator_graph = real


def _face_landmarks(mesh: Any, image: np.ndarray) -> list[Any] | None:
    """``mesh.process(image).multi_face_landmarks``, without the rest of ``process``.

    MediaPipe's ``SolutionBase.process`` defines a new namedtuple class on every call to hold the
    outputs (in a profile about 0.2 ms, 0.3 CPU-s over the 1586 frames of the shared clips, a twentieth
    of the tracked mesh's own cost). This sends the frame and reads the one output stream the same way
    (mediapipe is pinned to 0.10.21; ``tests/extractors/test_facemesh.py`` checks both give the same
    landmarks).
    """
    mesh._graph_outputs.clear()
    mesh._simulated_timestamp += 33333  # process()'s simulated 30 fps clock
    (stream, kind), = mesh._input_stream_type_info.items()
    mesh._graph.add_packet_to_input_stream(stream=stream, packet=mesh._make_packet(kind, image).at(
        mesh._simulated_timestamp))
    mesh._graph.wait_until_idle()
    out = mesh._graph_outputs.get("multi_face_landmarks")
    return None if out is None else mesh._get_packet_content(mesh._output_stream_type_info["multi_face_landmarks"],
                                                             out)


class FaceMeshAU(Extractor):
    """Geometric AU intensity proxies, head pose and a face flag from MediaPipe face mesh."""

    name = "facemesh_au"
    version = "2"
    modality = "visual"
    packages = ("mediapipe", "cv2")
    plot_signals = {"face": (("AU12", "AU12 lip corner puller (smile proxy)"), ("AU06", "AU06 cheek raiser"))}

    @classmethod
    def weights_status(cls) -> tuple[bool, str]:
        return shipped_files_status("mediapipe", "modules", ("face_landmark/face_landmark_with_attention.tflite",
                                                             "face_detection/face_detection_short_range.tflite"),
                                    "MediaPipe face mesh", "pip install mediapipe==0.10.21")

    @dataclass(frozen=True)
    class Config(Checked):
        fps: Positive = 10.0  # frames sampled per second of video
        max_side: Size | None = 640  # frames are downscaled so their longest side is at most this
        max_faces: Size = 1  # faces meshed per frame; the largest one is described
        min_detection_confidence: Fraction = 0.5
        # True: MediaPipe's video mode, restarted for every clip: a frame is seeded from the previous
        # frame's landmarks and the face detector runs only when the face is lost (or fewer than
        # max_faces are tracked). False: every frame is detected afresh (static image mode).
        tracking: bool = True

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._mesh: Any = None
        self._used = False  # the graph has seen frames since it was (re)started
        self._restart = False  # restart the graph before the next frame

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mesh": None, "_used": False, "_restart": False}

    def weights_identity(self) -> dict[str, Any]:
        # face_landmark_with_attention.tflite + BlazeFace ship inside the mediapipe wheel
        return {"package": "mediapipe", "version": package_version("mediapipe"), "model": "face_mesh refine_landmarks"}

    def describe(self) -> tuple[int, tuple[str, ...], float | None]:
        return len(COLUMNS), COLUMNS, self.config.fps

    def preload(self) -> None:
        import_mediapipe()  # the graph itself owns threads: built lazily, in the process that uses it

    def _get_mesh(self) -> Any:
        if self._mesh is None:
            mp = import_mediapipe()
            with native_log_muted(), _single_threaded_graphs():
                self._mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=not self.config.tracking,
                    max_num_faces=self.config.max_faces,
                    refine_landmarks=True,
                    min_detection_confidence=self.config.min_detection_confidence,
                )
        return self._mesh

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks (478, 3) of the largest face in an RGB frame, in pixels, y up, z toward the camera.

        Only the rows this module reads (``USED``) are filled, the others are NaN: converting MediaPipe's
        478 landmark objects to floats costs more than the geometry. The largest face is the one with
        the largest box around those landmarks (forehead, chin and both sides of the face included).
        """
        h, w = image.shape[:2]
        mesh = self._get_mesh()
        with native_log_muted():  # a restarting graph logs from its own threads: restart where fd 2 is muted
            if self._restart:
                mesh.reset()
                self._restart = False
            faces = _face_landmarks(mesh, image)
        self._used = True
        best, best_area = None, -1.0
        for face in faces or ():
            lm = face.landmark
            pts = np.full((478, 3), np.nan)
            pts[USED] = [(lm[i].x * w, -lm[i].y * h, -lm[i].z * w) for i in USED]
            used = pts[USED]
            area = box_area((*used[:, :2].min(0), *used[:, :2].max(0)))
            if area > best_area:
                best, best_area = pts, area
        return best

    def extract(self, clip: Any) -> Features:
        self._restart = self._used and self.config.tracking  # tracking state never crosses from one clip to the next
        parts: list[np.ndarray] = []
        times: list[float] = []
        chunk: list[np.ndarray | None] = []  # landmarks of the frames not yet described

        def flush() -> None:
            rows = np.zeros((len(chunk), len(COLUMNS)), np.float32)
            found = [i for i, pts in enumerate(chunk) if pts is not None]
            if found:
                feats, ok = face_features(np.stack([chunk[i] for i in found]))
                idx = np.asarray(found)[ok]
                rows[idx, :-1], rows[idx, -1] = feats[ok], 1.0
            parts.append(rows)
            chunk.clear()

        # frames are used one by one and never kept (landmarks only): the decoding buffers are reused
        for frame in iter_frames(clip, self.config.fps, self.config.max_side, batch=8, reuse=True):
            chunk.append(self.landmarks(frame.image))
            times.append(frame.time)
            if len(chunk) == 64:
                flush()
        flush()
        data = np.concatenate(parts)
        face = data[:, -1]
        meta = {"face_ratio": float(face.mean()) if len(face) else 0.0, "n_frames": len(times)}
        return Features(data=data, times=np.asarray(times, dtype=np.float64), meta=meta)
