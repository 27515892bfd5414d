"""Issue 15.10: a features file msa-extract wrote loads in MMSA 2.2.1's own data loader.

MMSA is not a dependency: it is installed with ``--no-deps`` into a scratch folder (as bench/vs_mmsa.py
does) and its ``data_loader.py`` (numpy + torch only) is run on an MMSA-layout dataset extracted with the
fast fake extractors, unaligned and ``--align``ed, with BERT ids and with feature sequences, as SIMS
(unimodal labels) and as MOSI. Skipped when the package cannot be installed (no registry access).
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import extract_fakes
from extract_fakes import FAKE_RECIPE
from msa.pipeline.cli.extract import main

extract_fakes.register()
MMSA = "MMSA==2.2.1"
ROWS = [("v1", "c1", 1.2, "train", "av"), ("v1", "c2", -0.4, "train", "av2"), ("v2", "c1", 0.6, "valid", "av"),
        ("v3", "c1", -1.0, "test", "av2")]


@pytest.fixture(scope="module")
def mmsa(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    target = tmp_path_factory.mktemp("mmsa")
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
                               "--disable-pip-version-check", "--target", str(target), MMSA],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"{MMSA} cannot be installed here: {e}")
    if proc.returncode != 0:
        pytest.skip(f"{MMSA} cannot be installed here: {proc.stderr.strip().splitlines()[-1:]}")
    # MMSA/__init__ imports its whole training stack; the data loader itself needs only numpy and torch
    spec = importlib.util.spec_from_file_location("mmsa_data_loader", target / "MMSA" / "data_loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, make_clip: Any) -> dict[str, Path]:
    """label.csv + Raw/ with train/valid/test rows and SIMS unimodal labels; no text column, so the fake
    ASR gives word timings and --align works."""
    root = tmp_path_factory.mktemp("ds")
    media = {"av": make_clip(duration=1.0, fps=10, size=(64, 48)),
             "av2": make_clip(duration=1.2, fps=10, size=(64, 48), tone_hz=660.0)}
    lines = ["video_id,clip_id,label,label_T,label_A,label_V,mode"]
    for vid, cid, label, mode, kind in ROWS:
        (root / "Raw" / vid).mkdir(parents=True, exist_ok=True)
        shutil.copy(media[kind], root / "Raw" / vid / f"{cid}.mp4")
        lines.append(f"{vid},{cid},{label},{label},{-label},{label / 2},{mode}")
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    out = {}
    for name, extra in (("unaligned", []), ("aligned", ["--align"])):
        dest = tmp_path_factory.mktemp(name)
        assert main([str(root), "--out", str(dest), "--extractors", f"{FAKE_RECIPE},asr:fake_asr", "--quiet",
                     *extra]) == 0
        out[name] = dest / "features.pkl"
    return out


def _args(path: Path, dataset: str, use_bert: bool, aligned: bool, normalized: bool) -> dict[str, Any]:
    """The keys MMSA's config gives MMDataset (config_regression.json commonParams + datasetCommonParams)."""
    return {"dataset_name": dataset, "custom_feature": str(path), "featurePath": "", "feature_T": "",
            "feature_A": "", "feature_V": "", "use_bert": use_bert, "need_data_aligned": aligned,
            "need_normalized": normalized, "feature_dims": [768, 5, 20], "seq_lens": [50, 50, 50],
            "batch_size": 2}


@pytest.mark.parametrize("layout", ["unaligned", "aligned"])
@pytest.mark.parametrize("dataset, use_bert, normalized", [("sims", True, False), ("mosi", False, True)])
def test_mmsa_data_loader_reads_our_file(mmsa: ModuleType, extracted: dict[str, Path], layout: str, dataset: str,
                                         use_bert: bool, normalized: bool) -> None:
    import pickle

    path = extracted[layout]
    with open(path, "rb") as f:
        ours = pickle.load(f)
    assert ours["config"]["aligned"] is (layout == "aligned")
    args = _args(path, dataset, use_bert, layout == "aligned", normalized)
    loaders = mmsa.MMDataLoader(args, num_workers=0)  # MMSA's own loader: train, valid, test
    assert {k: len(v.dataset) for k, v in loaders.items()} == {"train": 2, "valid": 1, "test": 1}
    train = loaders["train"].dataset
    t_len = ours["train"]["text_bert"].shape[2]
    if layout == "aligned":  # every modality on the text's time axis, as MMSA's aligned files
        assert ours["train"]["audio"].shape[1] == ours["train"]["vision"].shape[1] == t_len
    assert args["seq_lens"] == train.get_seq_len()
    if use_bert:
        assert args["feature_dims"][0] == 768 and train.get_seq_len()[0] == t_len
    else:
        assert args["feature_dims"][0] == ours["train"]["text"].shape[2]
    assert args["feature_dims"][1:] == [ours["train"]["audio"].shape[2], ours["train"]["vision"].shape[2]]
    batch = next(iter(loaders["train"]))
    assert batch["labels"]["M"].shape == (2, 1)
    if dataset == "sims":
        for m, sign in (("T", 1.0), ("A", -1.0), ("V", 0.5)):  # label_T/A/V reached MMSA's unimodal labels
            np.testing.assert_allclose(batch["labels"][m].numpy().ravel(), sign * batch["labels"]["M"].numpy().ravel())
    if normalized:  # TFN/LMF: audio and vision averaged over time to one frame
        assert batch["audio"].shape[1] == batch["vision"].shape[1] == 1
    if layout == "unaligned":
        assert batch["audio_lengths"].shape == (2,) and int(batch["audio_lengths"].min()) >= 1
    else:
        assert "audio_lengths" not in batch
    if use_bert:  # MMSA's BertTextEncoder splits the (B, 3, L) float tensor into ids, mask, segments
        ids, mask = batch["text"][:, 0].long(), batch["text"][:, 1]
        assert ids.shape == (2, t_len) and float(mask.sum()) > 0
        assert int(ids[0, 0]) == int(ours["train"]["text_bert"][0, 0, 0])  # [CLS]
