"""Name -> object registries whose entries may be lazy ``"module:attr"`` strings.

Lazy entries keep ``import msa.*`` free of heavy imports (mediapipe, opensmile, open_clip, ...).
"""
from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

from msa.core.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, entry: T | str) -> None:
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name: {name!r}")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UsageError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def entry_path(self, name: str) -> str:
        """The ``module:attr`` of an entry without importing it."""
        entry = self._entries[name]
        if isinstance(entry, str):
            return entry
        return f"{entry.__module__}:{entry.__qualname__}"  # type: ignore[union-attr]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Registry({self.kind!r}, {self.names()})"
