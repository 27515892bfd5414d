"""Model zoo. Every model is reachable through ``MODELS`` (lazy entries) with named config presets.

A model class has a frozen ``Config`` dataclass and ``presets``: a dict from preset name to config
overrides. ``"default"`` is the paper/MMSA setting, ``"tiny"`` a fast setting for tests, and a
dataset name (``"mosi"``, ``"sims"``, ``"phq8"`` ...) the per-dataset defaults where they differ.
Training settings are the config's nested ``train`` part (``TrainSettings``); every config is validated
by ``msa.core.config`` when built (docs/training.md, Configs).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from msa.core.config import ConfigError, flatten, from_mapping
from msa.core.errors import UsageError
from msa.core.registry import Registry

MODELS: Registry = Registry("model")


for _name, _path in {
    "self_mm": "msa.models.self_mm:SelfMM",
    "tfn": "msa.models.tfn:TFN",
    "lmf": "msa.models.lmf:LMF",
    "mult": "msa.models.mult:MulT",
    "mimrl": "msa.models.mimrl:MIMRL",
    "mmim": "msa.models.mmim:MMIM",
    "hscl": "msa.models.hscl:HSCL",
    "clip_ca_msa": "msa.models.clip_ca_msa:ClipCAMSA",
    "text_regressor": "msa.models.text_regressor:TextRegressor",
    "bilingual_text": "msa.models.bilingual_text:BilingualText",
    "pooled_mlp": "msa.models.pooled_mlp:PooledMLP",
}.items():
    MODELS.register(_name, _path)


def build_config(model: str, dataset: str | None = None, preset: str = "default", overrides: dict[str, Any] | None = None) -> Any:
    """Config = class defaults <- dataset preset <- named preset (e.g. tiny) <- its per-dataset part
    (``"paper:mosi"``: a preset that differs per dataset must have one for the dataset asked for) <- user
    overrides.

    Each layer may nest (``{"train": {"batch_size": 8}}``) or dot (``{"train.batch_size": 8}``) its keys;
    the result is validated (types, ranges, allowed values). Unknown keys and bad values are one-line
    ``ConfigError``s (a typo never silently becomes a default).
    """
    cls = MODELS.get(model)
    presets: dict[str, dict[str, Any]] = getattr(cls, "presets", {})
    named = {k.partition(":")[0] for k in presets}
    if preset != "default" and preset not in named:
        raise UsageError(f"model {model!r} has no preset {preset!r}; presets: {', '.join(sorted(named)) or 'none'}")
    specific = [k.partition(":")[2] for k in presets if k.startswith(f"{preset}:")]
    if specific and dataset not in specific:
        raise UsageError(f"model {model!r} has no {preset!r} preset for dataset {dataset!r}; it has one for "
                         f"{', '.join(specific)}")
    merged: dict[str, Any] = {}
    try:
        for layer in (presets.get(dataset or "", {}), presets.get(preset, {}) if preset != "default" else {},
                      presets.get(f"{preset}:{dataset}", {}) if preset != "default" else {}, overrides or {}):
            flat = flatten(cls.Config, layer)
            for key in flat:  # a later whole value (even a wrong one) replaces earlier dotted parts of it
                for stale in [k for k in merged if k.startswith(key + ".")]:
                    del merged[stale]
            merged.update(flat)
        return from_mapping(cls.Config, merged)
    except ConfigError as e:
        raise e.within(model) from e


def config_from_saved(model: str, saved: dict[str, Any]) -> Any:
    """The config a bundle saved, validated; older flat training keys (``batch_size``) move into ``train``."""
    from msa.models.base import TrainSettings  # imports torch: not at package import

    cls = MODELS.get(model)
    own = {f.name for f in dataclasses.fields(cls.Config)}
    train = {f.name for f in dataclasses.fields(TrainSettings)}
    data: dict[str, Any] = {}
    for key, value in cls.legacy_config(dict(saved)).items():
        if key not in own and key in train:
            key, value = f"train.{key}", (None if key.startswith("clip_") and value == 0 else value)
        data[key] = value
    return from_mapping(cls.Config, data)


def build_model(model: str, dims: Any, task: Any, config: Any = None) -> Any:
    cls = MODELS.get(model)
    return cls(config if config is not None else build_config(model, task.name), dims, task)
