"""One validator for every frozen config dataclass (models, their training settings, extractors).

A config field is checked against its type annotation (bool, int, float, str, ``X | None``,
``Literal[...]``, ``tuple[X, ...]``, ``list[X]``, a nested config dataclass) and the rules in an
``Annotated`` annotation (``Annotated[float, positive()]``; the common ones are named: ``Size``,
``Count``, ``Dropout``, ``Fraction``, ``Positive``, ``NonNegative``). JSON values are coerced where that loses
nothing: an int for a float, a list for a tuple, an object for a nested config; a bool is never a
number and a float never an int. A bad value is one ``ConfigError`` line naming the key, the
value and what is allowed: ``lr = 'fast': expected a number > 0``; callers prefix where it came from.

A config class inherits ``Checked`` to be validated whenever it is built (``Config(...)``,
``dataclasses.replace``); ``from_mapping`` builds one from a JSON-like dict with nested or dotted keys.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Mapping

from msa.core.errors import UsageError


class ConfigError(UsageError):
    """A config value or key that does not fit its dataclass (one line; ``key`` is dotted for nested parts)."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key

    def within(self, where: str) -> "ConfigError":
        """The same error prefixed with where the config came from (``tfn: ...``)."""
        return ConfigError(f"{where}: {self}", key=self.key)


@dataclass(frozen=True)
class Rule:
    """A value constraint beyond the type, used as ``Annotated[float, positive()]``."""

    test: Callable[[Any], bool]
    allows: str  # "> 0", ">= 1", "in [0, 1)"; a whole phrase when ``phrase`` is set
    phrase: bool = False  # True: ``allows`` replaces the type's description (syntaxes such as step:S:G)


def positive() -> Rule:
    """A number > 0."""
    return Rule(lambda v: v > 0, "> 0")


def at_least(lo: float) -> Rule:
    """A number >= ``lo``."""
    return Rule(lambda v: v >= lo, f">= {lo:g}")


def in_range(lo: float, hi: float, *, hi_open: bool = False) -> Rule:
    """A number in [lo, hi] (or [lo, hi) with ``hi_open``)."""
    if hi_open:
        return Rule(lambda v: lo <= v < hi, f"in [{lo:g}, {hi:g})")
    return Rule(lambda v: lo <= v <= hi, f"in [{lo:g}, {hi:g}]")


def one_of(*values: Any) -> Rule:
    """One of ``values`` (mode names, class counts)."""
    return Rule(lambda v: v in values, "one of " + ", ".join(repr(v) for v in values), phrase=True)


def parses(parse: Callable[[Any], Any], allows: str) -> Rule:
    """A value ``parse`` accepts without ValueError (spec strings such as "step:60:0.1")."""
    def test(v: Any) -> bool:
        try:
            parse(v)
        except ValueError:
            return False
        return True

    return Rule(test, allows, phrase=True)


def matching(test: Callable[[Any], bool], allows: str) -> Rule:
    """A value ``test`` accepts; ``allows`` says which in words (e.g. "a scheduler step:S:G")."""
    return Rule(test, allows, phrase=True)


Size = Annotated[int, at_least(1)]  # widths, heads, layers, counts
Count = Annotated[int, at_least(0)]  # counts where 0 means "none" or "automatic"
Dropout = Annotated[float, in_range(0.0, 1.0, hi_open=True)]
Fraction = Annotated[float, in_range(0.0, 1.0)]  # probabilities, confidence thresholds
Positive = Annotated[float, positive()]  # learning rates, scales, temperatures
NonNegative = Annotated[float, at_least(0.0)]  # weight decays, loss weights


# ---------------------------------------------------------------------------------------------
# checking


class Checked:
    """Mixin for frozen config dataclasses: every instance is validated (and JSON-coerced) when built."""

    def __post_init__(self) -> None:
        validate(self)


def is_config(t: Any) -> bool:
    """True for a dataclass type (a nested config part)."""
    return isinstance(t, type) and dataclasses.is_dataclass(t)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key} = {_short(value)}: expected {expected}", key=key)


def describe(t: Any) -> str:
    """What a type annotation accepts, in words ("a number > 0", "a list of integers", "a string or null")."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Annotated:
        rules = [r for r in t.__metadata__ if isinstance(r, Rule)]
        phrase = next((r.allows for r in rules if r.phrase), None)
        return phrase or " ".join([describe(args[0]), *(r.allows for r in rules)])
    if origin in (typing.Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list) or t in (tuple, list):
        return f"a list of {_plural(describe(args[0])) if args else 'values'}"
    if is_config(t):
        return "an object"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, "a value")


def _plural(desc: str) -> str:
    for one, many in (("true or false", "booleans"), ("a number", "numbers"), ("an integer", "integers"),
                      ("a string", "strings"), ("one of", "values, each one of")):
        if desc.startswith(one):
            return many + desc[len(one):]
    return "values"


def coerce(key: str, value: Any, t: Any) -> Any:
    """``value`` as type ``t`` (JSON-lossless coercions only, rules checked); ConfigError naming ``key``."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Annotated:
        try:
            out = coerce(key, value, args[0])
        except ConfigError:
            raise _fail(key, value, describe(t)) from None
        if not all(r.test(out) for r in t.__metadata__ if isinstance(r, Rule)):
            raise _fail(key, value, describe(t))
        return out
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, a)
            except ConfigError:
                continue
        raise _fail(key, value, describe(t))
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif t is float:
        if _finite_number(value):
            return float(value)
    elif t is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list) or t in (tuple, list):
        return _coerce_seq(key, value, t)
    elif is_config(t):
        if isinstance(value, t):
            return value
        if isinstance(value, Mapping):
            return from_mapping(t, value, prefix=f"{key}.")
    else:
        return value  # Any or an annotation this validator does not model
    raise _fail(key, value, describe(t))


def _finite_number(v: Any) -> bool:
    """A finite JSON number that fits a float: a 400-digit integer does not (``float()`` would overflow)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) <= sys.float_info.max if isinstance(v, int) else math.isfinite(v)


def _coerce_seq(key: str, value: Any, t: Any) -> Any:
    origin, args = typing.get_origin(t) or t, typing.get_args(t)
    if not isinstance(value, (list, tuple)):
        raise _fail(key, value, describe(t))
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _fail(key, value, f"a list of {len(args)} values")
        return tuple(coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    inner = args[0] if args else Any
    try:
        items = [coerce(key, v, inner) for v in value]
    except ConfigError:
        raise _fail(key, value, describe(t)) from None
    return tuple(items) if origin is tuple else items


def validate(obj: Any, prefix: str = "") -> Any:
    """Check and coerce every field of the dataclass instance ``obj`` in place; returns ``obj``."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        key = prefix + f.name
        t = hints.get(f.name, Any)
        raw = getattr(obj, f.name)
        if is_config(t) and isinstance(raw, Mapping):  # a partial nested part: over the field's default
            value = from_mapping(t, raw, base=_default(f), prefix=f"{key}.")
        else:
            value = coerce(key, raw, t)
        if value is not raw:
            object.__setattr__(obj, f.name, value)
    return obj


# ---------------------------------------------------------------------------------------------
# building from JSON-like mappings


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable key of ``cls``, nested parts dotted (``train.batch_size``)."""
    hints = _hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        t = hints.get(f.name)
        out += valid_keys(t, f"{prefix}{f.name}.") if is_config(t) else [prefix + f.name]
    return out


def flatten(cls: type, data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and dotted keys -> one flat ``{"train.batch_size": 8}`` dict; unknown keys raise."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected an object of config keys, "
                          f"got {type(data).__name__}", key=prefix.rstrip("."))
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        head, dot, rest = str(key).partition(".")
        t = hints.get(head)
        if head not in names or (dot and not is_config(t)):
            raise ConfigError(f"unknown config key {prefix + str(key)!r}; valid: {', '.join(valid_keys(cls, prefix))}",
                              key=prefix + str(key))
        if is_config(t) and (dot or isinstance(value, Mapping) or isinstance(value, t)):
            part = {rest: value} if dot else (dataclasses.asdict(value) if isinstance(value, t) else value)
            out.update(flatten(t, part, f"{prefix}{head}."))
        else:
            out[prefix + head] = value
    return out


def from_mapping(cls: type, data: Mapping[str, Any], *, base: Any = None, prefix: str = "") -> Any:
    """Build and validate ``cls`` from a JSON-like mapping (nested or dotted keys) over ``base`` or defaults."""
    flat = flatten(cls, data, prefix)
    kw: dict[str, Any] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        t = hints.get(f.name)
        sub = {k[len(prefix + f.name) + 1:]: v for k, v in flat.items() if k.startswith(prefix + f.name + ".")}
        if is_config(t) and sub:
            inner = getattr(base, f.name) if base is not None else _default(f)
            kw[f.name] = from_mapping(t, sub, base=inner, prefix=f"{prefix}{f.name}.")
        elif prefix + f.name in flat:
            kw[f.name] = flat[prefix + f.name]
    try:
        obj = dataclasses.replace(base, **kw) if base is not None else cls(**kw)
    except ConfigError as e:
        if prefix and not e.key.startswith(prefix):
            raise ConfigError(f"{prefix}{e}", key=prefix + e.key) from e
        raise
    return obj if isinstance(obj, Checked) else validate(obj, prefix)


def from_text(cls: type, text: Mapping[str, str]) -> Any:
    """Build ``cls`` from command-line ``KEY=VALUE`` text: JSON where it parses (``5``, ``0.5``, ``true``,
    ``null``, ``[1, 2]``), else the text itself; a string field keeps what was typed (``model=123``)."""
    hints = _hints(cls)
    data: dict[str, Any] = {}
    for key, raw in text.items():
        if _takes_str(hints.get(key)) and raw != "null":
            data[key] = raw
            continue
        try:
            data[key] = json.loads(raw)
        except json.JSONDecodeError:
            data[key] = raw
    return from_mapping(cls, data)


def _takes_str(t: Any) -> bool:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Annotated:
        return _takes_str(args[0])
    if origin in (typing.Union, types.UnionType, typing.Literal):
        return any(_takes_str(a) if origin is not typing.Literal else isinstance(a, str) for a in args)
    return t is str


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None
