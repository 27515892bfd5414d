"""Find installed packages and the weight files they ship without importing them (cheap, offline).

Extractors use these to answer "can I run here?" (``Extractor.weights_status``), so msa-doctor asks
each extractor instead of keeping its own table.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def msa_home() -> Path:
    """Where msa keeps files it derives from installed packages (never downloads)."""
    return Path(os.environ.get("MSA_HOME") or Path.home() / ".cache" / "msa").expanduser()


def has_module(name: str) -> bool:
    """Is ``name`` importable (found, not imported)?"""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def files_status(folder: Path | None, names: tuple[str, ...], what: str, supply: str) -> tuple[bool, str]:
    """(present, folder or what to do): are all ``names`` files in ``folder``?"""
    if folder is None:
        return False, f"{what}: package not installed; {supply}"
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        return False, f"{what}: missing {', '.join(missing)} in {folder}; {supply}"
    return True, str(folder)


def shipped_files_status(package: str, subdir: str, names: tuple[str, ...], what: str,
                         supply: str) -> tuple[bool, str]:
    """``files_status`` for weights inside an installed package's ``subdir``."""
    folder = package_dir(package)
    return files_status(folder and folder / subdir, names, what, supply)


def hf_cache() -> Path:
    """The Hugging Face hub cache folder (read only: msa never downloads)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home) / "hub"


def hf_snapshot(repo: str, root: Path | None = None) -> Path | None:
    """A downloaded snapshot of hub repo ``repo`` under a Hugging Face cache root, or None."""
    snapshots = (root or hf_cache()) / f"models--{repo.replace('/', '--')}" / "snapshots"
    for snap in sorted(snapshots.glob("*")) if snapshots.is_dir() else []:
        if any(p.is_file() for p in snap.iterdir()):
            return snap
    return None
