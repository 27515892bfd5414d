"""Model configs: validated on build, training settings nested under ``train``, presets and overrides merged."""
from __future__ import annotations

import dataclasses
import json

import pytest

from msa.checkpoints import shipped_bundle
from msa.core.config import ConfigError
from msa.models import MODELS, build_config, config_from_saved
from msa.models.base import TrainSettings

DATASETS = (None, "mosi", "mosei", "sims", "simsv2", "phq8", "custom")


@pytest.mark.parametrize("name", MODELS.names())
def test_every_preset_builds_a_valid_config_with_nested_training_settings(name: str) -> None:
    cls = MODELS.get(name)
    assert "train" in {f.name for f in dataclasses.fields(cls.Config)}
    assert not {f.name for f in dataclasses.fields(cls.Config)} & ({f.name for f in dataclasses.fields(TrainSettings)}
                                                                   - {"clip_value", "clip_norm"} - {"train"})
    for preset in ("default", *sorted({k.partition(":")[0] for k in cls.presets})):
        only = [k.partition(":")[2] for k in cls.presets if k.startswith(f"{preset}:")]  # e.g. paper:mosi
        for dataset in only or DATASETS:
            config = build_config(name, dataset, preset)
            assert isinstance(config.train, TrainSettings)
            assert config_from_saved(name, dataclasses.asdict(config)) == config  # what a bundle saves loads back


@pytest.mark.parametrize("override, message", [
    ({"average": "x"}, "tfn: average = 'x': expected one of 'padded', 'true'"),
    ({"lr": "fast"}, "tfn: lr = 'fast': expected a number > 0"),
    ({"hidden_text": -5}, "tfn: hidden_text = -5: expected an integer >= 1"),
    ({"dropout_post": 1.5}, "tfn: dropout_post = 1.5: expected a number in [0, 1)"),
    ({"train": {"batch_size": 0}}, "tfn: train.batch_size = 0: expected an integer >= 1"),
    ({"train.scheduler": "cosine"}, "tfn: train.scheduler = 'cosine': expected a scheduler plateau:P:F"),
    ({"batch_size": 8}, "tfn: unknown config key 'batch_size'; valid: hidden_text,"),
])
def test_the_issue_examples_are_one_line_errors(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_config("tfn", "mosi", "default", override)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_layers_merge_nested_and_dotted_training_keys() -> None:
    base = build_config("mult", "mosei")  # the dataset preset sets batch size 4 and plateau patience 20
    assert (base.train.batch_size, base.train.scheduler, base.train.update_every) == (4, "plateau:20:0.1", 8)
    c = build_config("mult", "mosei", "tiny", {"train.max_epochs": 3, "train": {"clip_value": 1.0}, "lr": 1})
    assert (c.train.batch_size, c.train.update_every, c.train.max_epochs, c.train.clip_value) == (8, 1, 3, 1.0)
    assert c.train.scheduler == "plateau:20:0.1" and c.lr == 1.0 and c.dim == 8


def test_model_defaults_live_in_the_train_part() -> None:
    assert MODELS.get("tfn").Config().train == TrainSettings(batch_size=32)
    assert MODELS.get("mult").Config().train == TrainSettings(batch_size=16, update_every=8, clip_value=0.6,
                                                              scheduler="plateau:5:0.1")
    # CLIP-CA-MSA picks its rule from the task (max:Acc_3 / max:CCC / min:MAE; see test_clip_ca_msa)
    assert MODELS.get("clip_ca_msa").Config().train.select == "auto"


def test_configs_saved_before_train_existed_load_into_train() -> None:
    saved = json.loads((shipped_bundle("default") / "bundle.json").read_text())
    config = config_from_saved("text_regressor", saved["model"]["config"])  # the shipped bundle: flat keys
    assert config.train == TrainSettings(optimizer="adamw", batch_size=32, max_epochs=8, early_stop=3)
    assert config.lr_head == 2e-4
    mult = config_from_saved("mult", {"grad_clip": 0.5, "patience": 7, "batch_size": 4, "update_every": 2})
    assert (mult.train.clip_value, mult.train.scheduler, mult.train.batch_size, mult.train.update_every) == \
        (0.5, "plateau:7:0.1", 4, 2)
    hscl = config_from_saved("hscl", {"when": 5, "lr_gamma": 0.2, "patience": 3, "clip_norm": 1.0})
    assert (hscl.train.scheduler, hscl.train.early_stop, hscl.train.clip_norm) == ("step:5:0.2", 3, 1.0)
    assert config_from_saved("mimrl", {"clip_value": 0}).train.clip_value is None  # 0 meant "no clipping"
    with pytest.raises(ConfigError, match=r"train.batch_size = -1: expected an integer >= 1"):
        config_from_saved("tfn", {"batch_size": -1})
