"""One validator for every frozen config dataclass (models, their training settings, extractors).

A config field is checked against its type annotation (bool, int, float, str, ``X | None``,
``Literal``, ``tuple[X, ...]``, ``list[X]``, a nested config dataclass) and against an optional rule
declared with the field (``positive``, ``at_least``, ``in_range``, ``fraction``, ``choice``,
``matching``). JSON values are coerced where that loses nothing: an int for a float, a list for a
tuple, an object for a nested config. A bad value is one ``ConfigError`` line naming the key, the
value and what is allowed: ``lr = 'fast': expected a number > 0``; callers prefix where it came from.

A config class inherits ``Checked`` to be validated whenever it is built (``Config(...)``,
``dataclasses.replace``); ``from_mapping`` builds one from a JSON-like dict with nested or dotted keys.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from msa.core.errors import UsageError

RULE = "msa_rule"
_MISSING: Any = dataclasses.MISSING


class ConfigError(UsageError):
    """A config value or key that does not fit its dataclass (one line; ``key`` is dotted for nested parts)."""

    reason = "bad_config"

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key

    def within(self, where: str) -> "ConfigError":
        """The same error prefixed with where the config came from (``tfn: ...``)."""
        return ConfigError(f"{where}: {self}", key=self.key)


@dataclass(frozen=True)
class Rule:
    """A value constraint beyond the type: ``test(value)`` and the words for what it allows."""

    test: Callable[[Any], bool]
    allows: str  # "> 0", ">= 1", "in [0, 1)", or a whole phrase when ``phrase`` is set
    phrase: bool = False  # True: ``allows`` replaces the type's description (choices, syntaxes)


def _field(default: Any, rule: Rule) -> Any:
    return dataclasses.field(default=default, metadata={RULE: rule})


def positive(*, default: Any = _MISSING) -> Any:
    """A number > 0."""
    return _field(default, Rule(lambda v: v > 0, "> 0"))


def at_least(lo: float, *, default: Any = _MISSING) -> Any:
    """A number >= ``lo`` (sizes, counts: ``at_least(1)``)."""
    return _field(default, Rule(lambda v: v >= lo, f">= {lo:g}"))


def in_range(lo: float, hi: float, *, default: Any = _MISSING, hi_open: bool = False) -> Any:
    """A number in [lo, hi] (or [lo, hi) with ``hi_open``)."""
    if hi_open:
        return _field(default, Rule(lambda v: lo <= v < hi, f"in [{lo:g}, {hi:g})"))
    return _field(default, Rule(lambda v: lo <= v <= hi, f"in [{lo:g}, {hi:g}]"))


def fraction(*, default: Any = _MISSING) -> Any:
    """A probability such as a dropout rate: in [0, 1)."""
    return in_range(0.0, 1.0, default=default, hi_open=True)


def choice(*values: Any, default: Any = _MISSING) -> Any:
    """One of ``values``; the default is the first unless given."""
    allowed = tuple(values)
    return _field(allowed[0] if default is _MISSING else default,
                  Rule(lambda v: v in allowed, "one of " + ", ".join(repr(v) for v in allowed), phrase=True))


def matching(test: Callable[[Any], bool], allows: str, *, default: Any = _MISSING) -> Any:
    """A value ``test`` accepts; ``allows`` says which (e.g. "a string like step:S:G")."""
    return _field(default, Rule(test, allows, phrase=True))


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
    return typing.get_type_hints(cls)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key} = {_short(value)}: expected {expected}", key=key)


def describe(t: Any) -> str:
    """What a type annotation accepts, in words ("a number", "a list of integers", "a string or null")."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        inner = args[0] if args else Any
        plural = {"a number": "numbers", "an integer": "integers", "a string": "strings", "true or false": "booleans"}
        return f"a list of {plural.get(describe(inner), 'values')}"
    if is_config(t):
        return "an object"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, "a value")


def coerce(key: str, value: Any, t: Any) -> Any:
    """``value`` as type ``t`` (JSON-lossless coercions only); ConfigError naming ``key`` otherwise."""
    origin, args = typing.get_origin(t), typing.get_args(t)
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
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
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


def _check_rule(key: str, value: Any, t: Any, rule: Rule) -> None:
    """Apply ``rule`` to a coerced value (to each element of a sequence; None is never checked)."""
    if value is None:
        return
    items = value if isinstance(value, (tuple, list)) else (value,)
    if all(rule.test(v) for v in items):
        return
    if rule.phrase:
        expected = rule.allows + (" or null" if _allows_none(t) else "")
    else:
        expected = f"{describe(t)} {rule.allows}" if not isinstance(value, (tuple, list)) else \
            f"{describe(t)}, each {rule.allows}"
    raise _fail(key, value, expected)


def _allows_none(t: Any) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType) and type(None) in typing.get_args(t)


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
        rule = f.metadata.get(RULE)
        if rule is not None:
            _check_rule(key, value, t, rule)
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
            raise ConfigError(f"{prefix}{e}", key=prefix + e.key) from None
        raise
    return obj if isinstance(obj, Checked) else validate(obj, prefix)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None
