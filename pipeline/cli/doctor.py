"""msa-doctor: offline preflight — which extractors and model backends can run on this machine.

    msa-doctor [--recipe default] [--json]

For every registered extractor and model backend it reports whether the extractor's module and
Python packages are installed and whether its weights are present locally, plus the ffmpeg binary
and whether CUDA is visible. It asks each extractor (``packages``, ``weights_status()``: see
extractors/base.py), so a new extractor needs no entry here. Nothing is downloaded and no heavy
backend is imported (packages are located with importlib, weights by file existence). Exit 0 when
the chosen recipe is usable, else 1.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from msa.core.packages import has_module
from msa.pipeline.cli import common

PROG = "msa-doctor"


# ------------------------------------------------------------------------------------- checks
# Model backends are the extractors' own weights seen from the model side (a model's text encoder,
# CLIP for CLIP-CA-MSA, ...): (extractor whose self-description answers, extra packages).
BACKENDS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "text-encoder minilm": ("minilm", ()),
    "text-encoder hf": ("hf", ()),
    "clip weights": ("clip_vitb16", ()),
    "py-feat weights": ("pyfeat_au", ()),
    "whisper model": ("whisper", ()),
    "distributed (dask)": (None, ("dask", "distributed")),
}


def _status(row: dict[str, Any], modality: str, packages: tuple[str, ...], weights: tuple[bool, str]) -> dict[str, Any]:
    found = {p: has_module(p) for p in packages}
    ok, detail = weights
    row.update(modality=modality, packages=found, weights_ok=ok, weights=detail,
               usable=all(found.values()) and ok and row.get("module_found", True))
    return row


def _extractor_row(name: str, modality: str | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the extractor says it needs (its ``packages`` and ``weights_status``), checked here."""
    from msa.extractors import EXTRACTORS

    module = EXTRACTORS.entry_path(name).partition(":")[0]
    row: dict[str, Any] = {"name": name, "module": module, "module_found": has_module(module)}
    try:
        cls = EXTRACTORS.get(name)
        weights = cls.weights_status()
    except Exception as e:  # noqa: BLE001 - a broken extractor is reported, never fatal to the doctor
        detail = " ".join(f"cannot check {module}: {type(e).__name__}: {e}".split())
        row.update(modality="?", packages={}, weights_ok=False, weights=detail, usable=False)
        return row
    return _status(row, modality or cls.modality, (*cls.packages, *extra), weights)


def _backend_row(name: str) -> dict[str, Any]:
    extractor, extra = BACKENDS[name]
    if extractor is None:
        return _status({"name": name}, "runner", extra, (True, "none needed"))
    row = _extractor_row(extractor, "model", extra)
    row["name"] = name
    for key in ("module", "module_found"):
        row.pop(key)
    return row


def _ffmpeg() -> dict[str, Any]:
    from msa.pipeline.extract.media import ffmpeg_exe, ffmpeg_version, frame_decoder_version

    try:
        path = ffmpeg_exe()
        return {"ok": True, "path": path, "version": ffmpeg_version(), "frames": frame_decoder_version()}
    except (ImportError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        return {"ok": False, "path": None, "version": None, "frames": None, "error": " ".join(f"{type(e).__name__}: {e}".split())}


def _cuda() -> dict[str, Any]:
    if not has_module("torch"):
        return {"torch": None, "available": False, "devices": []}
    import torch

    available = bool(torch.cuda.is_available())
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    return {"torch": torch.__version__, "available": available, "devices": devices}


def report(recipe: str = "default") -> dict[str, Any]:
    """Everything msa-doctor knows, as a JSON-able dict; ``usable`` answers for ``recipe``."""
    from msa.extractors import EXTRACTORS, RECIPES

    extractors = [_extractor_row(n) for n in EXTRACTORS.names()]
    by_name = {r["name"]: r for r in extractors}
    ffmpeg = _ffmpeg()
    recipes = {}
    for rname, parts in RECIPES.items():
        blocked = [f"{mod}:{ext}" for mod, ext in parts.items() if not by_name.get(ext, {}).get("usable")]
        if not ffmpeg["ok"]:
            blocked.append("ffmpeg")
        recipes[rname] = {"extractors": parts, "usable": not blocked, "blocked_by": blocked}
    return {
        "ffmpeg": ffmpeg,
        "cuda": _cuda(),
        "extractors": extractors,
        "backends": [_backend_row(n) for n in BACKENDS],
        "recipes": recipes,
        "recipe": recipe,
        "usable": recipes[recipe]["usable"],
    }


def _table(rows: list[dict[str, Any]], title: str) -> list[str]:
    lines = [f"{title:<20} {'modality':<9}{'code':<8}{'packages':<10}{'weights':<9}status      detail"]
    for r in rows:
        code = {None: "-", True: "ok", False: "MISSING"}[r.get("module_found")]
        missing = [p for p, ok in r["packages"].items() if not ok]
        detail = r["weights"] if not missing else f"pip install: {', '.join(missing)}; {r['weights']}"
        if r.get("module_found") is False:
            detail = f"module {r['module']} not found; {detail}"
        lines.append(
            f"{r['name']:<20} {r['modality']:<9}{code:<8}{'MISSING' if missing else 'ok':<10}"
            f"{'ok' if r['weights_ok'] else 'MISSING':<9}{'ok' if r['usable'] else 'NOT USABLE':<12}{detail}"
        )
    return lines


def render(rep: dict[str, Any]) -> str:
    """The human-readable table."""
    ff, cuda = rep["ffmpeg"], rep["cuda"]
    lines = [f"ffmpeg: {ff['path']} ({ff['version']}); frames: {ff['frames']}" if ff["ok"]
             else f"ffmpeg: NOT FOUND ({ff['error']})"]
    if cuda["torch"] is None:
        lines.append("cuda: torch not installed")
    else:
        gpus = ", ".join(cuda["devices"]) if cuda["available"] else "not visible, running on CPU"
        lines.append(f"cuda: {gpus} (torch {cuda['torch']})")
    lines += ["", *_table(rep["extractors"], "extractor"), "", *_table(rep["backends"], "model backend"), ""]
    for name, r in rep["recipes"].items():
        state = "usable" if r["usable"] else "NOT usable: " + ", ".join(r["blocked_by"])
        lines.append(f"recipe {name:<10} {state}")
    verdict = "usable" if rep["usable"] else "NOT usable"
    lines.append(f"\nrecipe '{rep['recipe']}' is {verdict} on this machine.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="default", help="recipe whose usability sets the exit code (default: default)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return p


def _main(args: argparse.Namespace) -> int:
    from msa.extractors import RECIPES

    from msa.core.errors import UsageError

    if args.recipe not in RECIPES:
        raise UsageError(f"unknown recipe {args.recipe!r}; valid names: {', '.join(sorted(RECIPES))}")
    rep = report(args.recipe)
    print(json.dumps(rep, indent=2) if args.json else render(rep))
    sys.stdout.flush()
    return 0 if rep["usable"] else 1


def main(argv: list[str] | None = None) -> int:
    return common.run(PROG, build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
