"""Features files: MMSA layouts, the AVEC2019-style PHQ-8 layout, the safe .npz export, schema errors."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from msa.pipeline.train import data as D
from msa.core.errors import DataError
from msa.pipeline.train.loader import SplitDataset, apply_norm, make_loader, norm_stats
from msa.pipeline.train.synth import SynthSpec, make_mmsa


def _pkl(tmp_path: Path, raw: dict, name: str = "f.pkl") -> Path:
    p = tmp_path / name
    p.write_bytes(pickle.dumps(raw))
    return p


def test_mmsa_unaligned_pickle_loads(tmp_path: Path) -> None:
    raw = make_mmsa(SynthSpec())
    raw["train"]["text_bert"] = raw["train"]["text_bert"].astype(np.float64)  # MMSA stores ids as floats
    raw["train"]["regression_labels"] = raw["train"]["regression_labels"].reshape(-1, 1)  # and sometimes (N, 1)
    fs = D.load_features(_pkl(tmp_path, raw))
    assert fs.sizes() == {"train": 48, "valid": 16, "test": 16}
    tr = fs.split("train")
    assert tr.text_bert.dtype == np.int64 and tr.labels.shape == (48,)
    assert tr.audio_lengths.dtype == np.int64
    assert np.array_equal(tr.audio_lengths, raw["train"]["audio_lengths"])
    d = fs.dims()
    assert (d.text, d.audio, d.vision, d.text_len, d.audio_len, d.vision_len, d.n_train) == (16, 5, 7, 12, 20, 15, 48)
    assert fs.sha256 and len(fs.sha256) == 64 and fs.warnings == []


def test_dims_come_from_the_file() -> None:
    fs = D.from_dict(make_mmsa(SynthSpec(text_dim=9, audio_dim=3, vision_dim=11, audio_len=7)))
    d = fs.dims()
    assert (d.text, d.audio, d.vision, d.audio_len, d.n_train) == (9, 3, 11, 7, 48)


def test_aligned_layout_derives_lengths_from_the_text_mask() -> None:
    raw = make_mmsa(SynthSpec(aligned=True))
    assert "audio_lengths" not in raw["train"]
    fs = D.from_dict(raw)
    tr = fs.split("train")
    assert np.array_equal(tr.audio_lengths, raw["train"]["text_bert"][:, 1].sum(axis=1))
    assert any("derived from the text_bert mask" in w for w in fs.warnings)


def test_lengths_without_text_ids_come_from_the_last_nonzero_frame() -> None:
    raw = make_mmsa(SynthSpec())
    for s in raw.values():
        del s["vision_lengths"]
    raw["train"]["vision"][0, 5:] = 0
    raw["train"]["vision"][0, 2] = 0  # an inner zero frame does not shorten the sequence
    fs = D.from_dict(raw)
    assert fs.split("train").vision_lengths[0] == 5


def test_sims_unimodal_labels_reach_the_batch() -> None:
    fs = D.from_dict(make_mmsa(SynthSpec(dataset="sims")))
    assert fs.has("T") and fs.has("V")
    batch = SplitDataset(fs.split("train")).__getitems__([3, 1])
    assert torch.equal(batch["labels_T"], torch.from_numpy(fs.split("train").unimodal["T"][[3, 1]]))
    assert D.make_task("sims", fs).metrics == "sims"


def test_avec_layout_dev_is_valid_and_phq8_range_is_checked() -> None:
    raw = make_mmsa(SynthSpec(dataset="phq8", sizes=(("train", 20), ("dev", 8), ("test", 8))))
    fs = D.from_dict(raw)
    assert set(fs.splits) == {"train", "valid", "test"}
    assert fs.split("dev") is fs.split("valid")
    task = D.make_task("phq8", fs)
    assert (task.low, task.high, task.metrics) == (0.0, 24.0, "phq8")
    for s in raw.values():
        s["regression_labels"] = s["regression_labels"] / 25
    scaled = D.from_dict(raw)
    with pytest.raises(DataError, match="scaled by 1/25"):
        D.make_task("phq8", scaled)
    raw["valid"] = raw["dev"]
    with pytest.raises(DataError, match="keep one validation split"):
        D.from_dict(raw)


def test_label_range_and_custom_preset() -> None:
    raw = make_mmsa(SynthSpec(dataset="phq8"))
    fs = D.from_dict(raw)
    with pytest.raises(DataError, match="outside the mosi range"):
        D.make_task("mosi", fs)
    task = D.make_task("custom", fs)
    allv = np.concatenate([s["regression_labels"] for s in raw.values()])
    assert (task.low, task.high, task.metrics) == (float(allv.min()), float(allv.max()), "regression")
    with pytest.raises(DataError, match="unknown dataset preset"):
        D.make_task("imdb", fs)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("train") and r.pop("valid") and r.pop("test"), "no splits found"),
        (lambda r: [r["train"].pop(k) for k in ("regression_labels", "classification_labels")],
         "missing 'regression_labels'"),
        (lambda r: r["train"].pop("audio"), "audio is present in split 'valid' but not in 'train'"),
        (lambda r: [r["train"].pop(k) for k in ("text", "text_bert", "audio", "vision")], "has no features"),
        (lambda r: r["train"].__setitem__("audio", r["train"]["audio"][:-2]), "audio has 46 rows but regression_labels has 48"),
        (lambda r: [r["valid"]["regression_labels"].__setitem__(3, np.nan), r["valid"].pop("classification_labels")],
         "NaN/inf value"),
        (lambda r: r["train"].__setitem__("text_bert", r["train"]["text_bert"][:, :2]), r"text_bert must be \(N, 3, L\)"),
        (lambda r: r["test"].__setitem__("vision", r["test"]["vision"][:, :, :3]), "vision width differs across splits"),
        (lambda r: r["train"].__setitem__("audio_lengths", [1, 2]), "audio_lengths has 2 entries"),
        (lambda r: r["train"].__setitem__("audio", np.zeros((48, 4))[..., None, None]), r"must be \(N, T, D\)"),
    ],
)
def test_schema_errors_are_clear(mutate, message: str) -> None:
    raw = make_mmsa(SynthSpec())
    mutate(raw)
    with pytest.raises(DataError, match=message):
        D.from_dict(raw)


def test_nonfinite_features_become_zero_with_a_warning() -> None:
    raw = make_mmsa(SynthSpec())
    raw["train"]["audio"][0, 0, 0] = -np.inf
    raw["train"]["vision"][1, 0, :2] = np.nan
    fs = D.from_dict(raw)
    assert fs.split("train").audio[0, 0, 0] == 0 and np.isfinite(fs.split("train").vision).all()
    assert any("1 non-finite value(s) in audio" in w for w in fs.warnings)
    assert any("2 non-finite value(s) in vision" in w for w in fs.warnings)


def test_zero_lengths_are_reported_and_clamped() -> None:
    raw = make_mmsa(SynthSpec())
    raw["train"]["audio_lengths"][4] = 0
    fs = D.from_dict(raw)
    assert fs.split("train").audio_lengths[4] == 1
    assert any("empty audio" in w for w in fs.warnings)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        D.load_features(tmp_path / "nope.pkl")
    (tmp_path / "f.h5").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown features format"):
        D.load_features(tmp_path / "f.h5")
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="not a readable features pickle"):
        D.load_features(tmp_path / "bad.pkl")
    with pytest.raises(DataError, match="expected a dict of splits"):
        D.load_features(_pkl(tmp_path, [1, 2, 3], "list.pkl"))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a readable .npz"):
        D.load_features(tmp_path / "bad.npz")


def test_npz_round_trip_without_pickles(tmp_path: Path) -> None:
    raw = make_mmsa(SynthSpec(dataset="sims"))
    spec = {"name": "egemaps", "spec_hash": "abc123", "dim": 5}
    raw["config"] = {"format": "msa-features", "specs": {"audio": spec, "visual": {"name": "fm", "spec_hash": "f00"}}}
    path = D.save_npz(raw, tmp_path / "f.npz")
    with np.load(path, allow_pickle=False) as z:  # every entry readable with pickles disabled
        keys = set(z.files)
        assert z["train/id"].dtype.kind == "U"
    assert {"train/audio", "valid/regression_labels_T", "test/text_bert", D.NPZ_META} <= keys
    back = D.load_npz(path)
    assert back["config"] == raw["config"]
    for split in ("train", "valid", "test"):
        for k, v in raw[split].items():
            assert np.array_equal(np.asarray(back[split][k]), np.asarray(v).astype(back[split][k].dtype)), (split, k)
    fs = D.load_features(path)
    assert fs.specs == {"audio": spec, "vision": {"name": "fm", "spec_hash": "f00"}}
    assert fs.split("train").ids[0] == "train_vid$_$0"


def test_npz_rejects_foreign_entries(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, loose=np.zeros(3))
    with pytest.raises(DataError, match="expected '<split>/<key>'"):
        D.load_npz(p)


def test_loader_batches_and_deterministic_shuffle() -> None:
    fs = D.from_dict(make_mmsa(SynthSpec(dataset="sims")))
    tr = fs.split("train")
    b = next(iter(make_loader(tr, 8, shuffle=True, seed=3)))
    assert {"text", "text_bert", "audio", "audio_lengths", "vision", "vision_lengths", "labels", "labels_T",
            "labels_A", "labels_V", "index"} <= set(b)
    idx = b["index"].numpy()
    assert torch.equal(b["audio"], torch.from_numpy(tr.audio[idx]))
    assert torch.equal(b["labels"], torch.from_numpy(tr.labels[idx]))
    assert b["text_bert"].dtype == torch.long and b["audio"].dtype == torch.float32
    order = lambda seed: torch.cat([x["index"] for x in make_loader(tr, 8, shuffle=True, seed=seed)])  # noqa: E731
    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))
    assert sorted(order(3).tolist()) == list(range(48))


def test_normalisation_uses_true_frames_of_train_only() -> None:
    fs = D.from_dict(make_mmsa(SynthSpec()))
    tr = fs.split("train")
    stats = norm_stats(tr)
    x = apply_norm(tr, stats)["audio"]
    mask = np.arange(tr.audio.shape[1])[None, :] < tr.audio_lengths[:, None]
    assert np.allclose(x[mask].mean(axis=0), 0, atol=1e-4) and np.allclose(x[mask].std(axis=0), 1, atol=1e-3)
    assert np.all(x[~mask] == 0)
    ds = SplitDataset(fs.split("test"), stats)  # test uses train statistics, unchanged
    assert torch.allclose(ds.tensors["audio"], torch.from_numpy(apply_norm(fs.split("test"), stats)["audio"]))


def test_non_finite_features_differ_from_mmsa_exactly_as_documented() -> None:
    """Issue 15.7 (a kept, documented difference, docs/reproduction.md): MMSA's loader zeroes only audio
    -inf; a NaN elsewhere survives until TFN/LMF's mean over the padded time axis, whose NaN is then set
    to 0, so one bad frame zeroes that feature's whole average (and a vision +-inf survives as inf).
    We zero every non-finite value per frame first, so the average keeps the finite frames."""
    raw = make_mmsa(SynthSpec(sizes=(("train", 4), ("valid", 2))), seed=8)
    tr = raw["train"]
    tr["audio"][0, 1, :] = -np.inf
    tr["vision"][1, 2, 3] = np.nan
    ours = D.from_dict(raw).split("train")

    audio, vision = tr["audio"].copy(), tr["vision"].copy()  # MMSA's steps, data_loader.py (need_normalized)
    audio[audio == -np.inf] = 0
    a_mean, v_mean = audio.mean(1), vision.mean(1)
    a_mean[a_mean != a_mean], v_mean[v_mean != v_mean] = 0, 0

    np.testing.assert_array_equal(ours.audio, audio)  # audio -inf: identical
    np.testing.assert_allclose(ours.audio.mean(1), a_mean, rtol=1e-6)
    ours_mean = ours.vision.mean(1)
    assert v_mean[1, 3] == 0 and ours_mean[1, 3] != 0  # the NaN feature: MMSA 0, ours the finite frames' mean
    np.testing.assert_allclose(ours_mean[1, 3], np.nansum(tr["vision"][1, :, 3]) / tr["vision"].shape[1], rtol=1e-6)
    keep = np.ones_like(v_mean, dtype=bool)
    keep[1, 3] = False
    np.testing.assert_allclose(ours_mean[keep], v_mean[keep], rtol=1e-6)  # everything else identical
