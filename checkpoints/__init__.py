"""Shipped bundles as package data (``msa.checkpoints``): found through the package, never the source tree."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_bundle(name: str) -> Path:
    """The folder of a bundle shipped inside the package (it may not exist: see ``has_bundle``)."""
    return Path(str(files(__name__) / name))
