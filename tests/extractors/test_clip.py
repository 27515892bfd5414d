"""clip_vitb16: random-init embeddings on a generated clip, and the missing/bad weights paths."""
from __future__ import annotations

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors.clip import ENV_WEIGHTS, ClipViTB16
from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import MissingBackendError, UsageError

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def clip(make_clip) -> Clip:
    return Clip.from_path(make_clip(duration=3.0, fps=25, size=(160, 120), audio=False))


@pytest.fixture(scope="module")
def random_clip() -> ClipViTB16:
    return EXTRACTORS.get("clip_vitb16")(random_init=True)


@pytest.fixture(scope="module")
def embedded(random_clip: ClipViTB16, clip: Clip):
    return random_clip.extract(clip)  # the one full 6-frame forward pass of this module


@pytest.mark.slow
def test_random_init_gives_six_unit_embeddings(random_clip: ClipViTB16, clip: Clip, embedded) -> None:
    assert embedded.data.shape == (6, 512) and embedded.data.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedded.data, axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(embedded.times) > 0) and embedded.times[0] == 0.0
    assert embedded.times[-1] < clip.duration
    assert not np.allclose(embedded.data[0], embedded.data[-1])  # different frames, different embeddings
    spec = random_clip.spec()
    assert spec.weights["weights"] == "random-init" and spec.dim == 512 and len(spec.columns) == 512


@pytest.mark.slow
def test_random_init_is_deterministic_across_instances(random_clip: ClipViTB16, clip: Clip, embedded) -> None:
    other = ClipViTB16(random_init=True)
    model, preprocess, _ = other._get_model()
    first, mine = model.state_dict(), random_clip._get_model()[0].state_dict()
    assert first.keys() == mine.keys() and all(torch.equal(first[k], mine[k]) for k in first)
    frame = next(other._frames(clip)).image
    from PIL import Image

    with torch.inference_mode():
        again = torch.nn.functional.normalize(model(preprocess(Image.fromarray(frame))[None]), dim=-1)
    # batch of 1 vs batch of 6: the same up to float summation order
    np.testing.assert_allclose(again.numpy()[0], embedded.data[0], atol=1e-5)
    assert other.spec().spec_hash == random_clip.spec().spec_hash
    assert ClipViTB16(random_init=True, seed=1).spec().spec_hash != random_clip.spec().spec_hash


def test_frame_sampling(clip: Clip) -> None:
    spread = [f.time for f in ClipViTB16(random_init=True, n_frames=4)._frames(clip)]
    assert len(spread) == 4 and spread[0] == 0.0 and spread[-1] >= clip.duration * 0.6
    assert [f.time for f in ClipViTB16(random_init=True, fps=1.0)._frames(clip)] == [0.0, 1.0, 2.0]
    assert ClipViTB16(random_init=True, fps=1.0).spec().rate == 1.0


def test_missing_weights_names_what_to_supply(monkeypatch) -> None:
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    with pytest.raises(MissingBackendError, match=ENV_WEIGHTS) as err:
        ClipViTB16().spec()
    assert err.value.reason == "missing_backend" and "\n" not in err.value.one_line()
    with pytest.raises(MissingBackendError, match="not found"):
        ClipViTB16(weights="/nonexistent/ViT-B-16.safetensors").extract(object())


def test_uncached_pretrained_tag_does_not_download(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HOME", str(tmp_path))  # and an empty ~/.cache/clip
    monkeypatch.setenv(ENV_WEIGHTS, "laion2b_s34b_b88k")
    with pytest.raises(MissingBackendError, match="not in the local cache"):
        ClipViTB16().spec()


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path) -> None:
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"not_a_clip_key": torch.zeros(2)}, str(bad))
    ex = ClipViTB16(weights=str(bad))
    assert ex.spec().weights["weights"] == "bad.safetensors"
    assert ex.spec().config["weights"] is None  # the path is not part of the output identity
    with pytest.raises(MissingBackendError, match="do not fit"):
        ex.extract(object())


def test_bad_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        ClipViTB16(random_init=True, n_frames=0)
