"""Bad config values through every CLI entry point: one line naming the key, a usage/bundle exit, never a traceback.

Property tests (hypothesis, derandomized, bounded): for a random registered model (``MODELS``) or extractor
(``EXTRACTORS``), a random key of its config (nested ``train.*`` keys included) gets a value of a wrong JSON
type or outside the field's rule (``Size``, ``Dropout``, ``one_of`` ...). The values are derived from the
annotations here, independently of the validator's own coercion, and fed through ``msa-train --config``,
``msa-extract --set``, and a tampered ``bundle.json`` copy loaded by ``msa-eval`` and ``msa-predict``.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultkit import FAKES, judge, run_inproc
from msa.core.config import Rule
from msa.extractors import EXTRACTORS
from msa.models import MODELS

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
JUNK = ("fast", "abc", "x1", "--", "none", "[1")  # never JSON, never a valid mode or spec
NUMBERS = (-1_000_000, -5, -1, -0.5, 0, 0.5, 0.999, 1, 1.5, 2, 4, 1_000_000_000)
SAMPLES = {"bool": [True, False], "int": [-3, 0, 7], "float": [-2.5, 0.25, 3.5], "str": list(JUNK),
           "null": [None], "list": [[1, "a"], []], "object": [{"a": 1}]}


def kinds(t: Any) -> set[str]:
    """The JSON kinds a field annotation accepts (an int is accepted for a float, never a bool for a number)."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Annotated:
        return kinds(args[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(kinds(a) for a in args))
    if origin is typing.Literal:
        return {"str"}
    if t is type(None):
        return {"null"}
    if origin in (tuple, list) or t in (tuple, list):
        return {"list"}
    if dataclasses.is_dataclass(t):
        return {"object"}
    return {bool: {"bool"}, int: {"int"}, float: {"int", "float"}, str: {"str"}}.get(t, set(SAMPLES))


def rules(t: Any) -> list[Any]:
    """Value tests of a field: its ``Rule``s, ``Literal`` choices; for a list, the element's (as a one-item list)."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Annotated:
        return [r.test for r in t.__metadata__ if isinstance(r, Rule)] + rules(args[0])
    if origin in (typing.Union, types.UnionType):
        return [r for a in args if a is not type(None) for r in rules(a)]
    if origin is typing.Literal:
        return [lambda v, allowed=args: v in allowed]
    if origin in (tuple, list) and args:
        return [lambda v, inner=test: isinstance(v, list) and all(inner(x) for x in v) for test in rules(args[0])]
    return []


def bad_values(t: Any, *, text: bool) -> list[Any]:
    """Values ``t`` must refuse: other JSON kinds, and values of an accepted kind that break a rule.
    ``text``: a ``--set`` value, where any text is a valid string (a wrong type cannot be typed for strings)."""
    ok = kinds(t)
    wrong = [v for kind, vs in SAMPLES.items() if kind not in ok and not (text and "str" in ok) for v in vs]
    tests = rules(t)
    if not tests:
        return wrong
    elem_list = "list" in ok
    pool = [*NUMBERS, *JUNK] if not elem_list else [[v] for v in (*NUMBERS, *JUNK)]
    fit = [v for v in pool if _kind(v[0] if elem_list else v) in (_elem_kinds(t) if elem_list else ok)]
    return wrong + [v for v in fit if not all(test(v) for test in tests)]


def _kind(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(v), "object")


def _elem_kinds(t: Any) -> set[str]:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Annotated:
        return _elem_kinds(args[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_elem_kinds(a) for a in args if a is not type(None)))
    return kinds(args[0]) if args else set(SAMPLES)


def fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, annotation) of every field, nested parts both as a whole and key by key."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        out.append((prefix + f.name, t))
        if dataclasses.is_dataclass(t):
            out += fields(t, f"{prefix}{f.name}.")
    return out


def cases(registry: Any, *, text: bool = False) -> list[tuple[str, str, Any]]:
    """(name, dotted key, bad value) for every entry of ``registry``."""
    return [(name, key, v) for name in registry.names() for key, t in fields(registry.get(name).Config)
            for v in bad_values(t, text=text)]


def nested(key: str, value: Any) -> dict[str, Any]:
    head, dot, rest = key.partition(".")
    return {head: nested(rest, value) if dot else value}


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


MODEL_CASES = cases(MODELS)
EXTRACTOR_CASES = cases(EXTRACTORS, text=True)
BUNDLE_EXTRACTOR_CASES = cases(EXTRACTORS)


def test_every_model_and_extractor_has_cases() -> None:
    assert {c[0] for c in MODEL_CASES} == set(MODELS.names())
    real = {n for n in EXTRACTORS.names() if EXTRACTORS.entry_path(n).startswith("msa.")}
    assert real <= {c[0] for c in EXTRACTOR_CASES}
    assert ("tfn", "average", "fast") in MODEL_CASES and ("tfn", "train.batch_size", 0) in MODEL_CASES
    assert ("facemesh_au", "fps", -1) in EXTRACTOR_CASES and ("facemesh_au", "fps", "abc") in EXTRACTOR_CASES


@pytest.mark.parametrize("config, line", [
    ({"average": "x"}, "msa-train: error: tfn: average = 'x': expected one of 'padded', 'true'"),
    ({"lr": "fast"}, "msa-train: error: tfn: lr = 'fast': expected a number > 0"),
    ({"hidden_text": -5}, "msa-train: error: tfn: hidden_text = -5: expected an integer >= 1"),
    ({"train": {"batch_size": 0}}, "msa-train: error: tfn: train.batch_size = 0: expected an integer >= 1"),
])
def test_the_issue_examples(config: dict, line: str, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "c.json").write_text(json.dumps(config))
    res = run_inproc("train", ["--data", tmp_path / "absent.npz", "--dataset", "mosi", "--model", "tfn",
                               "--out", tmp_path / "run", "--config", tmp_path / "c.json"], capsys)
    assert judge(res, prog="msa-train").lines() == [line] and res.rc == 2


@pytest.mark.parametrize("value, line", [
    ("abc", "msa-extract: error: --set facemesh_au: fps = 'abc': expected a number > 0"),
    ("-1", "msa-extract: error: --set facemesh_au: fps = -1: expected a number > 0"),
])
def test_set_visual_fps(value: str, line: str, media: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    res = run_inproc("extract", [media["good"], "--out", tmp_path / "out", "--extractors", f"{FAKES},visual:facemesh_au",
                                 "--set", f"visual.fps={value}"], capsys)
    assert judge(res, prog="msa-extract").lines() == [line] and res.rc == 2


@FUZZ
@given(case=st.sampled_from(MODEL_CASES), dotted=st.booleans())
def test_train_config_file(case: tuple[str, str, Any], dotted: bool, tmp_path_factory: Any, capsys: Any) -> None:
    model, key, value = case
    tmp = tmp_path_factory.mktemp("cfg")
    (tmp / "c.json").write_text(json.dumps({key: value} if dotted else nested(key, value)))
    res = run_inproc("train", ["--data", tmp / "absent.npz", "--dataset", "mosi", "--model", model, "--out", tmp / "run",
                               "--config", tmp / "c.json", "--device", "cpu", "--quiet"], capsys)
    judge(res, names=[f"{model}: {key} = "], prog="msa-train")
    assert res.rc == 2, res.err


@FUZZ
@given(case=st.sampled_from(EXTRACTOR_CASES))
def test_extract_set(case: tuple[str, str, Any], media: dict[str, Path], tmp_path_factory: Any, capsys: Any) -> None:
    name, key, value = case
    modality = EXTRACTORS.get(name).modality
    res = run_inproc("extract", [media["good"], "--out", tmp_path_factory.mktemp("out"), "--quiet",
                                 "--extractors", f"{FAKES},{modality}:{name}", "--set", f"{modality}.{key}={as_text(value)}"],
                     capsys)
    judge(res, names=[f"--set {name}: {key} = "], prog="msa-extract")
    assert res.rc == 2, res.err


@FUZZ
@given(case=st.sampled_from(MODEL_CASES))
def test_eval_tampered_model_config(case: tuple[str, str, Any], copy_bundle: Any, tmp_path_factory: Any,
                                    capsys: Any) -> None:
    model, key, value = case
    b = copy_bundle(tmp_path_factory.mktemp("b").name)
    meta = json.loads((b / "bundle.json").read_text())
    meta["model"].update(name=model, config=nested(key, value))
    (b / "bundle.json").write_text(json.dumps(meta))
    res = run_inproc("eval", ["--bundle", b, "--data", b / "absent.npz"], capsys)
    judge(res, names=[str(b), f"{model}: {key} = "], prog="msa-eval")
    assert res.rc == 1, res.err


@FUZZ
@given(case=st.sampled_from(BUNDLE_EXTRACTOR_CASES))
def test_predict_tampered_extractor_spec(case: tuple[str, str, Any], copy_bundle: Any, media: dict[str, Path],
                                         tmp_path_factory: Any, capsys: Any) -> None:
    name, key, value = case
    b = copy_bundle(tmp_path_factory.mktemp("b").name)
    meta = json.loads((b / "bundle.json").read_text())
    meta["features"]["audio"]["spec"].update(name=name, config={key: value})
    (b / "bundle.json").write_text(json.dumps(meta))
    res = run_inproc("predict", [media["good"], "--bundle", b, "--device", "cpu"], capsys)
    judge(res, names=[str(b), f"extractor {name} cannot be rebuilt", f"{key} = "], prog="msa-predict")
    assert res.rc == 1, res.err
