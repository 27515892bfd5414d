"""Training runs over several seeds and bundle evaluation: what msa-train and msa-eval do.

A run folder holds ``results.csv`` (one row per seed plus ``mean`` and ``std``), ``epochs.jsonl``
(one record per seed and epoch, with the model's own logged quantities such as MI estimates),
``bundle.json`` + ``weights.safetensors`` of the seed with the best validation selection value and,
with ``save_all_seeds``, one bundle per seed under ``seeds/<seed>/``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from msa.pipeline.train.data import FeatureSet, check_labels, load_features, make_task
from msa.core.errors import DataError, UsageError

RESULTS = "results.csv"
EPOCHS = "epochs.jsonl"


@dataclass(frozen=True)
class RunSpec:
    """Everything msa-train was asked for (no global mutable args)."""

    data: Path
    dataset: str
    model: str
    out: Path
    seeds: tuple[int, ...] = (1111,)
    epochs: int | None = None
    preset: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    normalize: bool = False
    amp: bool = True
    progress: bool = True
    save_all_seeds: bool = False
    overwrite: bool = False


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_inputs(model_cls: Any, fs: FeatureSet) -> None:
    """The model's text input must be in the file: BERT ids for fine-tuning models, else text features."""
    if getattr(model_cls, "uses_bert_ids", False) and not fs.has("text_bert"):
        raise DataError(f"model {model_cls.name!r} reads BERT ids, but the file has no 'text_bert'; "
                        "extract with a BERT-family text extractor (e.g. minilm)")
    if not getattr(model_cls, "uses_bert_ids", False) and not fs.has("text"):
        raise DataError(f"model {model_cls.name!r} reads text features (N, L, D), but the file only has 'text_bert' ids")


def task_for(dataset: str, fs: FeatureSet, config: Any) -> Any:
    """The dataset preset's Task; a classification config (``n_classes`` > 0, e.g. CLIP-CA-MSA) makes it one."""
    return make_task(dataset, fs, n_classes=int(getattr(config, "n_classes", 0) or 0))


def train_run(spec: RunSpec, log: Callable[[str], None] = _log) -> list[dict[str, Any]]:
    """Train ``spec.model`` once per seed; write results, epoch logs and the best seed's bundle."""
    from msa.models import MODELS, build_config

    from msa.pipeline.train.bundle import save_bundle
    from msa.pipeline.train.loader import norm_stats
    from msa.pipeline.train.trainer import fit, parse_select, resolve_device, seed_everything

    cls = MODELS.get(spec.model)
    config = build_config(spec.model, spec.dataset, spec.preset, spec.overrides)  # a bad config fails before any I/O
    out = Path(spec.out)
    if (out / RESULTS).exists() and not spec.overwrite:
        raise UsageError(f"{out} already holds a run ({RESULTS}); choose another --out or pass --overwrite")
    device = resolve_device(spec.device)
    fs = load_features(spec.data)
    for w in fs.warnings:
        log(f"warning: {w}")
    train, valid = fs.split("train"), fs.split("valid")
    test = fs.splits.get("test")
    task = task_for(spec.dataset, fs, config)
    check_inputs(cls, fs)
    dims = fs.dims()
    stats = norm_stats(train) if spec.normalize else None
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    best_value: float | None = None
    with open(out / EPOCHS, "w") as epochs_file:
        def on_epoch(record: dict[str, Any]) -> None:
            epochs_file.write(json.dumps(_clean(record), allow_nan=False) + "\n")
            epochs_file.flush()

        for seed in spec.seeds:
            seed_everything(seed)
            model = cls(config, dims, task)
            settings = model.train_settings()
            if spec.epochs is not None:
                settings = dataclasses.replace(settings, max_epochs=spec.epochs)
            log(f"msa-train: {spec.model} on {spec.data} ({spec.dataset}), seed {seed}, device {device}, "
                f"up to {settings.max_epochs} epochs, select {settings.select}")
            result = fit(model, train, valid, test, task, seed=seed, settings=settings, device=device, stats=stats,
                         amp=spec.amp, progress=spec.progress, log=log, on_epoch=on_epoch)
            for note in result.notes:
                log(f"note: {note}")
            row = {"seed": seed, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "stopped": result.stopped, "seconds": round(result.seconds, 2),
                   **{f"valid_{k}": round(v, 6) for k, v in result.valid.items()},
                   **{f"test_{k}": round(v, 6) for k, v in (result.test or {}).items()}}
            rows.append(row)
            provenance = {
                "data_file": str(Path(spec.data).resolve()), "data_sha256": fs.sha256, "splits": fs.sizes(),
                "dataset": spec.dataset, "seed": seed, "best_epoch": result.best_epoch, "preset": spec.preset,
                "overrides": spec.overrides, "train_settings": dataclasses.asdict(settings),
                "normalized": spec.normalize, "metrics": {"valid": result.valid, "test": result.test},
                "data_warnings": fs.warnings,
            }
            kwargs = dict(model_name=spec.model, config=config, task=task, dims=dims, specs=fs.specs, norm=stats,
                          provenance=_clean(provenance))
            key, higher = parse_select(settings.select)
            value = result.valid[key]
            if best_value is None or (value > best_value if higher else value < best_value):
                best_value = value
                save_bundle(out, model, **kwargs)
                log(f"msa-train: seed {seed} is the best so far (valid {key} {value:.4f}); bundle written to {out}")
            if spec.save_all_seeds:
                save_bundle(out / "seeds" / str(seed), model, **kwargs)
    write_results(out / RESULTS, rows)
    return rows


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows per seed, then ``mean`` and ``std`` (population, as MMSA's np.std) of every numeric column."""
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    numeric = [c for c in columns if c not in ("seed", "stopped") and all(isinstance(r.get(c), (int, float)) for r in rows)]
    summary = []
    for name, fn in (("mean", np.mean), ("std", np.std)):
        summary.append({"seed": name, **{c: round(float(fn([r[c] for r in rows])), 4) for c in numeric}})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in [*rows, *summary]:
            w.writerow(r)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------------------------------------
# evaluation of a saved bundle

def evaluate_bundle(bundle: Any, fs: FeatureSet, split: str = "test", device: str | None = None,
                    log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Score one split of a features file with a loaded bundle (same metric definitions as msa-train)."""
    from msa.models import MODELS

    from msa.pipeline.train.bundle import check_specs
    from msa.pipeline.train.loader import DeviceLoader, make_loader
    from msa.pipeline.train.trainer import evaluate, resolve_device

    s = fs.split(split)
    cls = MODELS.get(bundle.model_name)
    check_inputs(cls, fs)
    fd, bd = fs.dims(), bundle.dims
    for m in ("audio", "vision") + (("text",) if not getattr(cls, "uses_bert_ids", False) else ()):
        if getattr(fd, m) != getattr(bd, m):
            raise DataError(f"{m} features are {getattr(fd, m)}-d in {fs.path.name if fs.path else 'the file'}, "
                            f"the bundle was trained on {getattr(bd, m)}-d; extract with the bundle's extractors")
    if fs.specs:
        check_specs(bundle.meta, fs.specs)
    elif any(bundle.specs.get(m) for m in ("text", "audio", "vision")):
        log("warning: the features file has no spec stamp, so its extractors cannot be checked against the bundle")
    check_labels(FeatureSet(splits={s.name: s}, path=fs.path), bundle.task)
    dev = resolve_device(device)
    bundle.model.to(dev)
    loader = DeviceLoader(make_loader(s, 64, shuffle=False, stats=bundle.norm or None), dev)
    metrics = evaluate(bundle.model, loader, bundle.task)
    return {"bundle": str(bundle.path), "data": str(fs.path), "split": s.name, "n": len(s),
            "task": bundle.task.name, "metrics": metrics}
