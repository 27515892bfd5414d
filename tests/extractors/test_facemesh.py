"""facemesh_au: proxy geometry on the canonical face, pose recovery, no-face behaviour, real clips."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors import facemesh as fm
from msa.pipeline.extract.clip_input import Clip

AU = {name: i for i, name in enumerate(fm.COLUMNS)}


def rot(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Ry(yaw) @ Rx(-pitch) @ Rz(roll), angles in degrees (the convention pose_angles inverts)."""
    p, y, r = np.radians([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(-p), -np.sin(-p)], [0, np.sin(-p), np.cos(-p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def place(mesh: np.ndarray, r: np.ndarray | None = None) -> np.ndarray:
    """The canonical-frame mesh as a camera sees it: rotated, 25 px/cm, shifted (y up, z to camera)."""
    r = np.eye(3) if r is None else r
    return 25.0 * mesh @ r.T + np.array([320.0, -240.0, 10.0])


@pytest.fixture(scope="module")
def extractor() -> fm.FaceMeshAU:
    return EXTRACTORS.get("facemesh_au")()


def _canonical_row() -> np.ndarray:
    """What the canonical face should score: 0 everywhere but AU25, its own lip gap / inter-ocular distance."""
    canon = fm.canonical_mesh()
    iod = np.linalg.norm(canon[[263, 362]].mean(0) - canon[[33, 133]].mean(0))
    expected = np.zeros(len(fm.COLUMNS) - 1)
    expected[AU["AU25"]] = (canon[13, 1] - canon[14, 1]) / iod
    return expected


def test_canonical_neutral_face_scores_zero() -> None:
    row = fm.frame_features(place(fm.canonical_mesh()))
    assert row is not None
    np.testing.assert_allclose(row, _canonical_row(), atol=1e-9)
    assert 0.05 < row[AU["AU25"]] < 0.15  # the canonical model's lips are slightly apart


@pytest.mark.parametrize("angles", [(15.0, 0.0, 0.0), (0.0, -30.0, 0.0), (0.0, 0.0, 10.0), (-10.0, 25.0, -8.0)])
def test_pose_is_recovered_and_proxies_do_not_move_with_pose(angles: tuple[float, float, float]) -> None:
    row = fm.frame_features(place(fm.canonical_mesh(), rot(*angles)))
    assert row is not None
    np.testing.assert_allclose(row[[AU["pose_pitch"], AU["pose_yaw"], AU["pose_roll"]]], angles, atol=1e-6)
    np.testing.assert_allclose(row[: len(fm.AU_COLUMNS)], _canonical_row()[: len(fm.AU_COLUMNS)], atol=1e-6)


def test_pose_sign_conventions() -> None:
    # pitch > 0 moves the nose tip up, yaw > 0 to the image's right; roll > 0 lifts the subject's left eye
    base = place(fm.canonical_mesh())
    up = place(fm.canonical_mesh(), rot(20.0, 0.0, 0.0))
    right = place(fm.canonical_mesh(), rot(0.0, 20.0, 0.0))
    ccw = place(fm.canonical_mesh(), rot(0.0, 0.0, 20.0))
    assert up[1, 1] > base[1, 1] and right[1, 0] > base[1, 0]
    assert ccw[263, 1] > ccw[33, 1] and base[263, 1] == pytest.approx(base[33, 1])


def _moved(**moves: tuple[tuple[int, ...], tuple[float, float, float]]) -> np.ndarray:
    mesh = fm.canonical_mesh()
    for idx, delta in moves.values():
        for i in idx:
            mesh[i] += delta
            if i in fm._PAIRS:
                d = np.array(delta) * [-1, 1, 1]
                mesh[fm._PAIRS[i]] += d
    row = fm.frame_features(place(mesh, rot(5.0, -10.0, 3.0)))
    assert row is not None
    return row


def test_smile_raises_au12_and_lowers_au15() -> None:
    row = _moved(corners=((61,), (-0.4, 0.5, 0.0)))  # corners up and outward (x mirrored for the left)
    assert row[AU["AU12"]] > 0.05 and row[AU["AU15"]] < -0.05 and row[AU["AU20"]] > 0.05


def test_open_jaw_raises_au25_and_au26() -> None:
    row = _moved(jaw=((14, 17, 152), (0.0, -1.0, 0.0)))
    assert row[AU["AU25"]] > 0.1 and row[AU["AU26"]] > 0.1
    assert abs(row[AU["AU12"]]) < 1e-6  # the lip corners did not move


def test_brows_and_lids() -> None:
    raised = _moved(brows=(fm._ALL_BROW, (0.0, 0.6, 0.0)))
    assert raised[AU["AU01"]] > 0.05 and raised[AU["AU02"]] > 0.05 and raised[AU["AU04"]] < -0.05
    canon = fm.canonical_mesh()
    closed = _moved(lids=(fm._UPPER_LID, (0.0, float(canon[145, 1] - canon[159, 1]), 0.0)))
    assert 0.9 < closed[AU["AU45"]] < 1.1
    assert closed[AU["AU05"]] < 0


def test_degenerate_landmarks_are_not_a_face() -> None:
    assert fm.frame_features(np.zeros((478, 3))) is None


def test_spec_is_stable_and_describes_the_output(extractor: fm.FaceMeshAU) -> None:
    a, b = extractor.spec(), fm.FaceMeshAU().spec()
    assert a.spec_hash == b.spec_hash
    assert fm.FaceMeshAU(fps=15.0).spec().spec_hash != a.spec_hash
    assert a.dim == len(a.columns) == 17 and a.rate == 10.0 and a.modality == "visual"
    assert a.columns[-1] == "face" and {"AU12", "AU45", "pose_yaw"} <= set(a.columns)
    assert a.weights["package"] == "mediapipe" and a.weights["version"] == "0.10.21"


def test_no_face_clip_gives_zeros_flag_and_frame_count(make_clip, extractor: fm.FaceMeshAU) -> None:
    clip = Clip.from_path(make_clip(duration=2.0, fps=25, audio=False))
    feats = extractor.extract(clip)
    assert feats.data.dtype == np.float32 and feats.data.shape[1] == 17
    assert abs(len(feats.times) - round(clip.duration * 10.0)) <= 1
    np.testing.assert_allclose(np.diff(feats.times), 0.1, atol=1e-6)
    assert np.all(feats.data == 0.0) and feats.meta["face_ratio"] == 0.0
    again = extractor.extract(clip)
    assert np.array_equal(feats.data, again.data) and np.array_equal(feats.times, again.times)


class _FakeMesh:
    """Stands in for MediaPipe's FaceMesh: two faces, the second one twice as large."""

    def process(self, image: np.ndarray) -> SimpleNamespace:
        def face(scale: float, shift: float) -> SimpleNamespace:
            pts = np.nan_to_num(fm.canonical_mesh()) * scale / 100.0 + shift
            return SimpleNamespace(landmark=[SimpleNamespace(x=x, y=-y, z=-z) for x, y, z in pts])

        return SimpleNamespace(multi_face_landmarks=[face(1.0, 0.3), face(2.0, 0.6)])


def test_the_largest_face_is_described(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "_face_landmarks", lambda mesh, image: mesh.process(image).multi_face_landmarks)
    ex = fm.FaceMeshAU()
    ex._mesh = _FakeMesh()
    pts = ex.landmarks(np.zeros((100, 200, 3), np.uint8))
    assert pts is not None and pts.shape == (478, 3)
    assert np.isfinite(pts[fm.USED]).all() and np.isnan(np.delete(pts, fm.USED, axis=0)).all()
    width = np.nanmax(pts[:, 0]) - np.nanmin(pts[:, 0])
    canon = fm.canonical_mesh()
    assert width == pytest.approx((np.nanmax(canon[:, 0]) - np.nanmin(canon[:, 0])) * 2.0 / 100.0 * 200)


def test_pickles_without_the_mediapipe_graph(extractor: fm.FaceMeshAU) -> None:
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone._mesh is None and clone.spec().spec_hash == extractor.spec().spec_hash


@pytest.mark.realdata
def test_smile_raises_au12(shared_data, extractor: fm.FaceMeshAU) -> None:
    clip = Clip.from_path(shared_data / "video" / "smile_single_face.mp4")
    feats = extractor.extract(clip)
    t, au12 = feats.times, feats.data[:, AU["AU12"]]
    assert feats.meta["face_ratio"] == 1.0
    assert au12[t > clip.duration - 0.5].mean() > au12[t < 0.5].mean() + 0.1
    assert np.array_equal(feats.data, extractor.extract(clip).data)  # deterministic on real frames


@pytest.mark.realdata
def test_cartoon_has_almost_no_face(shared_data, extractor: fm.FaceMeshAU) -> None:
    feats = extractor.extract(Clip.from_path(shared_data / "video" / "no_face_cartoon.mp4"))
    assert feats.meta["face_ratio"] < 0.1
    assert np.all(feats.data[feats.data[:, -1] == 0] == 0.0) and np.isfinite(feats.data).all()


@pytest.mark.realdata
def test_face_then_cartoon(shared_data, extractor: fm.FaceMeshAU) -> None:
    feats = extractor.extract(Clip.from_path(shared_data / "video" / "face_then_cartoon_hevc.mov"))
    face, t = feats.data[:, -1], feats.times
    assert face[t < 1.0].mean() > 0.9
    assert face[t > 3.0].sum() == 0


def _face_clip(x0: int, n: int = 12) -> SimpleNamespace:
    """A fake clip: matplotlib's portrait pasted at column ``x0`` of a 480x360 frame, drifting 2 px per frame."""
    import matplotlib.image

    from msa.pipeline.extract.media import FrameBatch
    from msa.pipeline.serve.demo import face_image

    face = np.asarray(matplotlib.image.imread(face_image()))[::3, ::3, :3]  # 200 x 171
    frames = np.zeros((n, 360, 480, 3), np.uint8)
    for i in range(n):
        frames[i, 80 : 80 + face.shape[0], x0 + 2 * i : x0 + 2 * i + face.shape[1]] = face
    times = np.arange(n) / 10.0
    return SimpleNamespace(frames=lambda fps, batch, max_side, reuse=False: iter([FrameBatch(frames, times)]))


def test_tracking_never_carries_over_from_the_previous_clip() -> None:
    left, right = _face_clip(10), _face_clip(270)
    alone = fm.FaceMeshAU().extract(right)
    ex = fm.FaceMeshAU()
    ex.extract(left)
    after = ex.extract(right)
    assert alone.meta["face_ratio"] == 1.0
    assert np.array_equal(after.data, alone.data)  # bit-identical: the graph restarts for every clip
    assert np.array_equal(ex.extract(right).data, alone.data)


def test_reading_the_graph_directly_gives_what_process_gives() -> None:
    # two graphs, the same frames: MediaPipe's own process() and the lean reader the extractor uses
    frames = next(_face_clip(140).frames(10, 8, None)).frames
    theirs, ours = fm.FaceMeshAU()._get_mesh(), fm.FaceMeshAU()._get_mesh()
    for frame in (*frames, np.zeros_like(frames[0]), frames[0]):  # a frame without a face, then one again
        want, got = theirs.process(frame).multi_face_landmarks, fm._face_landmarks(ours, frame)
        assert (want is None) == (got is None)
        for a, b in zip(want or (), got or (), strict=True):
            assert [(p.x, p.y, p.z) for p in a.landmark] == [(p.x, p.y, p.z) for p in b.landmark]
    assert got is not None and len(got[0].landmark) == 478


def test_the_face_mesh_graph_runs_on_one_thread() -> None:
    from mediapipe.framework import calculator_pb2, thread_pool_executor_pb2

    ext = thread_pool_executor_pb2.ThreadPoolExecutorOptions.ext
    with_pool = calculator_pb2.CalculatorGraphConfig()
    with_pool.executor.add(name="")
    with_pool.executor.add(name="other").options.Extensions[ext].num_threads = 4
    fm.single_threaded(with_pool)
    assert with_pool.executor[0].options.Extensions[ext].num_threads == 1
    assert with_pool.executor[1].options.Extensions[ext].num_threads == 4  # named executors are left alone
    assert fm.single_threaded(calculator_pb2.CalculatorGraphConfig()).num_threads == 1
    # and the extractor's graph is built that way: the default executor of the face mesh has one thread
    built = []
    from mediapipe.python import solution_base

    real = solution_base.calculator_graph.CalculatorGraph
    try:
        solution_base.calculator_graph.CalculatorGraph = lambda graph_config: built.append(graph_config) or real(
            graph_config=graph_config)
        fm.FaceMeshAU()._get_mesh().close()
    finally:
        solution_base.calculator_graph.CalculatorGraph = real
    (config,) = built
    assert [ex.options.Extensions[ext].num_threads for ex in config.executor if not ex.name] == [1]


def test_tracking_and_static_mode_find_the_same_face() -> None:
    clip = _face_clip(140)
    tracked, static = fm.FaceMeshAU().extract(clip), fm.FaceMeshAU(tracking=False).extract(clip)
    assert tracked.meta["face_ratio"] == static.meta["face_ratio"] == 1.0
    assert fm.FaceMeshAU(tracking=False).spec().spec_hash != fm.FaceMeshAU().spec().spec_hash
    # the first frame is detected in both modes; later ones are seeded differently but land on the same face
    np.testing.assert_array_equal(tracked.data[0], static.data[0])
    pose = [AU["pose_pitch"], AU["pose_yaw"], AU["pose_roll"]]
    assert np.abs(tracked.data[:, pose] - static.data[:, pose]).mean() < 2.0  # degrees


def test_a_stack_of_faces_gives_the_rows_of_one_face_at_a_time() -> None:
    rng = np.random.default_rng(0)
    faces = np.stack([place(fm.canonical_mesh(), rot(*rng.uniform(-20, 20, 3))) + rng.normal(0, 0.5, (478, 3))
                      for _ in range(5)] + [np.zeros((478, 3))])  # the last one is degenerate
    rows, ok = fm.face_features(faces)
    assert ok.tolist() == [True] * 5 + [False]
    for face, row in zip(faces[:5], rows[:5]):
        np.testing.assert_allclose(fm.frame_features(face), row, rtol=0, atol=1e-12)


def test_mediapipe_loads_without_matplotlib_and_leaves_the_real_one_importable() -> None:
    import subprocess
    import sys

    code = ("import sys; from msa.extractors.face import import_mediapipe; mp = import_mediapipe(); "
            "assert 'matplotlib' not in sys.modules and mp.solutions.face_mesh.FaceMesh; "
            "import matplotlib.pyplot as plt; assert callable(plt.figure)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_mediapipe_loads_without_its_tasks_api_and_leaves_it_importable() -> None:
    """The Tasks API (sounddevice, PortAudio), drawing helpers (cv2) and other solutions are not loaded
    by import_mediapipe; face mesh and face detection work, and the skipped modules import for real later."""
    import subprocess
    import sys

    code = ("import sys; from msa.extractors.face import import_mediapipe; mp = import_mediapipe(); "
            "skipped = [m for m in ('sounddevice', 'cv2', 'mediapipe.tasks.python', "
            "'mediapipe.python.solutions.hands') if m in sys.modules]; assert not skipped, skipped; "
            "mp.solutions.face_mesh.FaceMesh(refine_landmarks=True).close(); "
            "mp.solutions.face_detection.FaceDetection().close(); "
            "from mediapipe.tasks.python import vision; assert vision.FaceLandmarker; "
            "import mediapipe.python.solutions.hands as hands; assert hands.Hands")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_muting_native_logs_never_swallows_a_python_line_from_another_thread() -> None:
    import subprocess
    import sys

    code = """
import logging, os, sys, threading, time
from msa.extractors.face import native_log_muted
muted, said = threading.Event(), threading.Event()
def native():
    with native_log_muted():
        muted.set()
        os.write(2, b"NATIVE NOISE\\\\n")
        said.wait(5)
t = threading.Thread(target=native); t.start(); muted.wait(5)
print("PYTHON LINE", file=sys.stderr)
logging.getLogger("msa.test").warning("LOGGED LINE")
said.set(); t.join()
os.write(2, b"NATIVE AFTER\\\\n")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "NATIVE NOISE" not in proc.stderr
    assert "PYTHON LINE" in proc.stderr and "LOGGED LINE" in proc.stderr and "NATIVE AFTER" in proc.stderr
