"""Issue 15.3: text_bert ids must be read with the vocabulary they were made with.

msa-extract stamps ``config["text_vocab"]``; msa-train, msa-eval and bundle loading refuse a text
encoder with another vocabulary, and an unstamped Chinese dataset read with an English vocabulary.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from msa.core.errors import BundleError, DataError
from msa.extractors.text import MiniLMText
from msa.models.layers.text import encoder_vocabulary, vocabulary_identity
from msa.pipeline.cli import eval as eval_cli
from msa.pipeline.cli import train as train_cli
from msa.pipeline.train.bundle import load_bundle
from msa.pipeline.train.data import save_npz
from msa.pipeline.train.synth import SynthSpec, make_mmsa
from msa.pipeline.train.vocab import check_vocabulary

torch.set_num_threads(1)
MINILM = {"name": "minilm", "vocabulary": encoder_vocabulary("minilm")}


@pytest.fixture(scope="module")
def chinese_folder(tmp_path_factory) -> Path:
    """A tokenizer folder whose vocabulary is mostly single CJK characters, as bert-base-chinese's."""
    folder = tmp_path_factory.mktemp("zh")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(0x4E00 + i) for i in range(300)] + ["a", "b"]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return folder


def test_vocabulary_identity_tells_english_from_chinese(chinese_folder: Path) -> None:
    en = MINILM["vocabulary"]
    assert en["size"] == 30522 and not en["chinese"]
    assert MiniLMText().vocabulary() == en  # what msa-extract stamps is what the encoder reads
    zh = vocabulary_identity(chinese_folder)
    assert zh["chinese"] and zh["size"] == 307 and zh["sha256"] != en["sha256"]
    assert encoder_vocabulary("tiny-random") is None  # random test encoder: nothing to check


def test_check_rules(chinese_folder: Path) -> None:
    zh = {"name": str(chinese_folder), "vocabulary": vocabulary_identity(chinese_folder)}
    check_vocabulary(MINILM["vocabulary"], MINILM, "sims")  # stamped and equal: fine even on SIMS
    check_vocabulary(None, MINILM, "mosi")  # MMSA's MOSI ids are bert-base-uncased's: MiniLM's vocabulary
    check_vocabulary(None, {"name": "tiny-random", "vocabulary": None}, "sims")
    with pytest.raises(DataError, match="come from a Chinese vocabulary of 307 tokens.*'minilm'"):
        check_vocabulary(zh["vocabulary"], MINILM, "custom")
    for dataset in ("sims", "simsv2"):
        with pytest.raises(DataError, match="bert-base-chinese ids, but text encoder 'minilm' has a non-Chinese"):
            check_vocabulary(None, MINILM, dataset)
    check_vocabulary(None, zh, "sims")
    with pytest.raises(DataError, match="has a Chinese vocabulary"):
        check_vocabulary(None, zh, "mosei")


def test_train_and_eval_refuse_a_mismatch_in_one_line(tmp_path: Path, capsys) -> None:
    raw = make_mmsa(SynthSpec(dataset="sims", sizes=(("train", 16), ("valid", 8), ("test", 8))), seed=1)
    sims = save_npz(raw, tmp_path / "sims.npz")  # unstamped, like MMSA's own SIMS files
    argv = ["--data", str(sims), "--dataset", "sims", "--model", "text_regressor", "--preset", "tiny",
            "--out", str(tmp_path / "run"), "--epochs", "1", "--device", "cpu", "--quiet"]
    (tmp_path / "minilm.json").write_text(json.dumps({"text_encoder": "minilm"}))
    assert train_cli.main([*argv, "--config", str(tmp_path / "minilm.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert "bert-base-chinese ids" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "results.csv").exists()

    raw["config"] = {"text_vocab": MINILM["vocabulary"]}  # stamped: MiniLM ids, so MiniLM may read them
    stamped = save_npz(raw, tmp_path / "stamped.npz")
    assert train_cli.main([*argv[:1], str(stamped), *argv[2:], "--config", str(tmp_path / "minilm.json")]) == 0
    meta = json.loads((tmp_path / "run" / "bundle.json").read_text())
    assert meta["text_encoder"] == MINILM
    capsys.readouterr()
    raw["config"] = {"text_vocab": {**MINILM["vocabulary"], "sha256": "0" * 32}}
    other = save_npz(raw, tmp_path / "other.npz")
    assert eval_cli.main(["--bundle", str(tmp_path / "run"), "--data", str(other)]) == 1
    assert "its text_bert ids come from" in capsys.readouterr().err

    meta["text_encoder"]["vocabulary"]["sha256"] = "1" * 32  # trained on another vocabulary than installed now
    (tmp_path / "run" / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="text encoder 'minilm' now has"):
        load_bundle(tmp_path / "run")
