"""msa.core.config: one validator for every config dataclass (types, JSON coercion, rules, nested keys)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal

import pytest

from msa.core.config import (Checked, ConfigError, Count, Dropout, Positive, Size, describe, from_mapping, from_text,
                             one_of, parses, valid_keys)
from msa.core.errors import UsageError


def _steps(spec: str) -> int:
    kind, _, n = spec.partition(":")
    if kind != "step":
        raise ValueError(spec)
    return int(n)


@dataclass(frozen=True)
class Inner(Checked):
    batch_size: Size = 32
    optimizer: Literal["adam", "adamw"] = "adam"
    clip: Positive | None = None
    schedule: Annotated[str, parses(_steps, "a schedule like step:N")] | None = None


@dataclass(frozen=True)
class Outer(Checked):
    lr: Positive = 1e-3
    hidden: Size = 8
    heads: Count = 0
    dropout: Dropout = 0.1
    average: Annotated[str, one_of("padded", "true")] = "padded"
    flag: bool = False
    name: str = "x"
    rates: tuple[Dropout, ...] = (0.5, 0.5)
    train: Inner = Inner(batch_size=16)


@dataclass(frozen=True)
class Plain:
    """A config without the mixin (e.g. a test extractor's): from_mapping still validates it."""

    fps: float = 5.0
    log: str = ""


def _err(fn, *a, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*a, **kw)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, UsageError) and e.value.exit_code == 2
    return msg


def test_defaults_and_lossless_json_coercion() -> None:
    c = from_mapping(Outer, {"lr": 1, "rates": [0.1, 0.2, 0.3], "train": {"clip": 2}})
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert c.rates == (0.1, 0.2, 0.3) and isinstance(c.rates, tuple)
    assert c.train == Inner(batch_size=16, clip=2.0)  # a partial nested part lands on the field's default
    assert Outer() == from_mapping(Outer, {})


def test_nested_and_dotted_keys_merge() -> None:
    c = from_mapping(Outer, {"train.optimizer": "adamw", "train": {"schedule": "step:3"}})
    assert (c.train.batch_size, c.train.optimizer, c.train.schedule) == (16, "adamw", "step:3")
    base = from_mapping(Outer, {"train.batch_size": 4})
    assert from_mapping(Outer, {"train.clip": 1.5}, base=base).train == Inner(batch_size=4, clip=1.5)


@pytest.mark.parametrize("data, message", [
    ({"lr": "fast"}, "lr = 'fast': expected a number > 0"),
    ({"lr": 0}, "lr = 0: expected a number > 0"),
    ({"lr": True}, "lr = True: expected a number > 0"),  # a bool is never a number
    ({"lr": float("nan")}, "lr = nan: expected a number > 0"),
    ({"hidden": -5}, "hidden = -5: expected an integer >= 1"),
    ({"hidden": 2.0}, "hidden = 2.0: expected an integer >= 1"),  # a float is never an int
    ({"heads": -1}, "heads = -1: expected an integer >= 0"),
    ({"dropout": 1.0}, "dropout = 1.0: expected a number in [0, 1)"),
    ({"lr": 10 ** 400}, "lr = 1" + "0" * 56 + "...: expected a number > 0"),  # too large for a float, not an OverflowError
    ({"average": "x"}, "average = 'x': expected one of 'padded', 'true'"),
    ({"flag": "yes"}, "flag = 'yes': expected true or false"),
    ({"name": 3}, "name = 3: expected a string"),
    ({"rates": [0.1, 2]}, "rates = [0.1, 2]: expected a list of numbers in [0, 1)"),
    ({"rates": 0.5}, "rates = 0.5: expected a list of numbers in [0, 1)"),
    ({"train": 5}, "train = 5: expected an object"),
    ({"train.batch_size": 0}, "train.batch_size = 0: expected an integer >= 1"),
    ({"train": {"optimizer": "sgd"}}, "train.optimizer = 'sgd': expected one of 'adam', 'adamw'"),
    ({"train.clip": -1}, "train.clip = -1: expected a number > 0 or null"),
    ({"train.schedule": "step:x"}, "train.schedule = 'step:x': expected a schedule like step:N or null"),
])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(data: dict, message: str) -> None:
    assert _err(from_mapping, Outer, data) == message


def test_unknown_keys_list_the_valid_ones() -> None:
    assert valid_keys(Outer)[-4:] == ["train.batch_size", "train.optimizer", "train.clip", "train.schedule"]
    msg = _err(from_mapping, Outer, {"nope": 1})
    assert msg.startswith("unknown config key 'nope'; valid: lr, hidden, heads,") and "train.schedule" in msg
    assert _err(from_mapping, Outer, {"train.nope": 1}).startswith("unknown config key 'train.nope'; valid: train.batch_size")
    assert _err(from_mapping, Outer, {"lr.x": 1}).startswith("unknown config key 'lr.x'")
    assert _err(from_mapping, Outer, [1]) == "config: expected an object of config keys, got list"  # type: ignore[arg-type]


def test_checked_configs_are_validated_whenever_built() -> None:
    assert _err(Outer, lr=-1) == "lr = -1: expected a number > 0"
    assert _err(dataclasses.replace, Outer(), hidden=0) == "hidden = 0: expected an integer >= 1"
    assert _err(Inner, batch_size="8") == "batch_size = '8': expected an integer >= 1"
    assert Outer(rates=[0.2]).rates == (0.2,)  # type: ignore[arg-type]


def test_plain_dataclasses_are_validated_by_from_mapping() -> None:
    assert from_mapping(Plain, {"fps": 2}).fps == 2.0
    assert _err(from_mapping, Plain, {"fps": "abc"}) == "fps = 'abc': expected a number"


def test_command_line_text() -> None:
    c = from_text(Outer, {"lr": "0.5", "flag": "true", "name": "123", "train.clip": "null", "rates": "[0.1]"})
    assert (c.lr, c.flag, c.name, c.train.clip, c.rates) == (0.5, True, "123", None, (0.1,))  # text fields keep text
    assert _err(from_text, Outer, {"hidden": "abc"}) == "hidden = 'abc': expected an integer >= 1"
    assert _err(from_text, Outer, {"lr": "-1"}) == "lr = -1: expected a number > 0"


def test_within_prefixes_where_the_config_came_from() -> None:
    with pytest.raises(ConfigError) as e:
        from_mapping(Outer, {"lr": "fast"})
    assert str(e.value.within("tfn")) == "tfn: lr = 'fast': expected a number > 0" and e.value.key == "lr"


def test_describe_reads_annotations() -> None:
    assert describe(Size) == "an integer >= 1" and describe(Positive | None) == "a number > 0 or null"
    assert describe(tuple[str, ...]) == "a list of strings" and describe(Literal["a", "b"]) == "one of 'a', 'b'"


def test_a_whole_value_over_a_preset_with_nested_keys_is_still_checked() -> None:
    """mimrl's mosi preset sets train.* keys; {"train": True} on top must not hide behind them."""
    from msa.models import build_config

    with pytest.raises(ConfigError, match="train = True"):
        build_config("mimrl", "mosi", "default", {"train": True})
