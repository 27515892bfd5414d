"""pyfeat_au: columns, weight lookup without downloads, the missing-weights error.

Full inference needs py-feat's weights, which are not available offline: ``test_smile_with_weights``
runs only when they can be found (``$MSA_PYFEAT_WEIGHTS`` or py-feat's resources folder).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors import pyfeat
from msa.pipeline.extract.clip_input import Clip
from msa.core.errors import MissingBackendError


def _all_files(root, hf_layout: bool) -> None:
    """Dummy weight files for every REQUIRED entry, flat or in a Hugging Face cache layout."""
    for repo, names in pyfeat.REQUIRED:
        if hf_layout:
            base = root / f"models--{repo.replace('/', '--')}"
            (base / "refs").mkdir(parents=True, exist_ok=True)
            (base / "refs" / "main").write_text("abc123")
            folder = base / "snapshots" / "abc123"
        else:
            folder = root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / names[0]).write_bytes(repo.encode() + names[0].encode())


def test_columns() -> None:
    ex = EXTRACTORS.get("pyfeat_au")()
    dim, columns, rate = ex.describe()
    assert dim == len(columns) == 31 and rate == 5.0
    assert columns[:20] == pyfeat.AUS and len(set(pyfeat.AUS)) == 20 and "AU12" in columns
    assert columns[20:27] == ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    assert columns[27:] == ("pose_pitch", "pose_roll", "pose_yaw", "face")


def test_missing_weights_is_one_clear_error_and_nothing_is_loaded(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(pyfeat.ENV_WEIGHTS, str(tmp_path))
    monkeypatch.setattr(pyfeat, "default_roots", lambda: [])
    imported_before = "feat" in sys.modules
    ex = pyfeat.PyFeatAU()
    with pytest.raises(MissingBackendError) as err:
        ex.extract(object())
    msg = err.value.one_line()
    assert pyfeat.ENV_WEIGHTS in msg and "py-feat/retinaface_r34/model.safetensors" in msg and str(tmp_path) in msg
    with pytest.raises(MissingBackendError):
        ex.spec()
    assert ("feat" in sys.modules) == imported_before  # checked before the slow py-feat import


def test_weights_dir_must_exist(tmp_path) -> None:
    with pytest.raises(MissingBackendError, match="folder not found"):
        pyfeat.PyFeatAU(weights_dir=str(tmp_path / "absent")).spec()


@pytest.mark.parametrize("hf_layout", [False, True])
def test_weights_are_found_in_a_local_folder(tmp_path, hf_layout: bool) -> None:
    _all_files(tmp_path, hf_layout)
    ex = pyfeat.PyFeatAU(weights_dir=str(tmp_path))
    files = ex.weight_files()
    assert {repo for repo, _ in files} == {repo for repo, _ in pyfeat.REQUIRED}
    assert all(path.is_file() and tmp_path in path.parents for path in files.values())
    ident = ex.spec().weights
    assert ident["package"] == "py-feat" and len(ident["files"]) == len(pyfeat.REQUIRED)
    assert pyfeat.PyFeatAU(weights_dir=str(tmp_path)).spec().spec_hash == ex.spec().spec_hash


def test_local_hub_serves_files_and_restores_the_download_function(tmp_path) -> None:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    _all_files(tmp_path, hf_layout=True)
    original = huggingface_hub.hf_hub_download
    with pyfeat.local_hub([tmp_path]):
        from huggingface_hub import hf_hub_download

        got = hf_hub_download(repo_id="py-feat/xgb_au", filename="xgb_au_classifier_v2.skops", cache_dir="/nowhere")
        assert got.endswith("xgb_au_classifier_v2.skops")
        with pytest.raises(EntryNotFoundError):  # py-feat's cue to try its fallback name; never a download
            hf_hub_download(repo_id="py-feat/xgb_au", filename="xgb_au_classifier.skops")
    assert huggingface_hub.hf_hub_download is original


@pytest.mark.realdata
@pytest.mark.slow
def test_smile_with_weights(shared_data) -> None:
    ex = pyfeat.PyFeatAU(fps=4.0)
    try:
        ex.weight_files()
    except MissingBackendError as e:
        pytest.skip(e.one_line()[:100])
    clip = Clip.from_path(shared_data / "video" / "smile_single_face.mp4")
    feats = ex.extract(clip)
    t = feats.times
    assert feats.data.shape == (len(t), 31) and feats.meta["face_ratio"] > 0.9 and np.isfinite(feats.data).all()
    happy = feats.data[:, pyfeat.COLUMNS.index("happiness")]
    au12 = feats.data[:, pyfeat.COLUMNS.index("AU12")]
    late, early = t > clip.duration - 0.5, t < 0.5
    assert happy[late].mean() > happy[early].mean() and au12[late].mean() > au12[early].mean()
