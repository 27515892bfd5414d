"""Training runs over several seeds and bundle evaluation: what msa-train and msa-eval do.

A run folder holds ``results.csv`` (one row per seed plus ``mean`` and ``std``), ``epochs.jsonl``
(one record per seed and epoch, with the model's own logged quantities such as MI estimates),
``metrics.json`` (every seed's validation and test metrics, with the confusion matrices and class
names of classification tasks), ``bundle.json`` + ``weights.safetensors`` of the seed with the best
validation selection value and, with ``save_all_seeds``, one bundle per seed under ``seeds/<seed>/``.
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
from msa.pipeline.train.vocab import check_vocabulary, text_encoder_record
from msa.core.errors import DataError, UsageError

RESULTS = "results.csv"
EPOCHS = "epochs.jsonl"
METRICS = "metrics.json"
TASKS = ("regression", "classification")


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
    amp: bool = False
    progress: bool = True
    save_all_seeds: bool = False
    overwrite: bool = False
    task: str = "regression"  # regression | classification (class labels; --dataset binary implies it)
    class_weights: str | None = None  # None | "balanced" | "w1,w2,..."
    group_by: str | None = None  # split so that no value of this column (e.g. speaker) is in two splits
    split_ratio: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/valid/test shares for --group-by


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_inputs(model_cls: Any, fs: FeatureSet) -> None:
    """The model's text input must be in the file: BERT ids for fine-tuning models, else text features."""
    if getattr(model_cls, "uses_bert_ids", False) and not fs.has("text_bert"):
        raise DataError(f"model {model_cls.name!r} reads BERT ids, but the file has no 'text_bert'; "
                        "extract with a BERT-family text extractor (e.g. minilm)")
    if not getattr(model_cls, "uses_bert_ids", False) and not fs.has("text"):
        raise DataError(f"model {model_cls.name!r} reads text features (N, L, D), but the file only has 'text_bert' ids")
    dims = fs.dims()
    for m in getattr(model_cls, "required_modalities", ()):
        if getattr(dims, m) == 0 and not (m == "text" and getattr(model_cls, "uses_bert_ids", False)):
            raise DataError(f"model {model_cls.name!r} needs {m} features, but the file has none; "
                            "pooled_mlp trains on any subset of modalities")


def task_for(dataset: str, fs: FeatureSet, config: Any) -> Any:
    """The dataset preset's Task; a classification config (``n_classes`` > 0, e.g. CLIP-CA-MSA) makes it one."""
    return make_task(dataset, fs, n_classes=int(getattr(config, "n_classes", 0) or 0))


def prepare_task(spec: RunSpec, model_cls: Any, fs: FeatureSet, config: Any) -> tuple[Any, FeatureSet]:
    """The run's Task and the features as the trainer sees them (class indices as labels when classifying)."""
    from msa.pipeline.train.classes import BINARY, class_task, class_view

    if spec.task not in TASKS:
        raise UsageError(f"unknown task {spec.task!r}; valid: {', '.join(TASKS)}")
    if spec.task == "regression":
        if spec.class_weights:
            raise UsageError("--class-weights applies to --task classification only")
        if spec.dataset == BINARY:
            raise UsageError("the binary preset is a classification task: add --task classification")
        return task_for(spec.dataset, fs, config), fs
    if not getattr(model_cls, "supports_classes", False):
        from msa.models import MODELS

        able = [n for n in MODELS.names() if getattr(MODELS.get(n), "supports_classes", False)]
        raise UsageError(f"model {model_cls.name!r} does not train on class labels; use one of: {', '.join(able)}")
    return class_task(spec.dataset, fs, spec.class_weights), class_view(fs)


def train_run(spec: RunSpec, log: Callable[[str], None] = _log) -> list[dict[str, Any]]:
    """Train ``spec.model`` once per seed; write results, epoch logs and the best seed's bundle."""
    from msa.models import MODELS, build_config

    from msa.pipeline.train.bundle import save_bundle
    from msa.pipeline.train.loader import norm_stats
    from msa.pipeline.train.trainer import fit, parse_select, resolve_device, seed_everything

    cls = MODELS.get(spec.model)
    config = build_config(spec.model, spec.dataset, spec.preset, spec.overrides)  # a bad config fails before any I/O
    encoder = text_encoder_record(config, spec.preset) if getattr(cls, "uses_bert_ids", False) else None
    out = Path(spec.out)
    if (out / RESULTS).exists() and not spec.overwrite:
        raise UsageError(f"{out} already holds a run ({RESULTS}); choose another --out or pass --overwrite")
    device = resolve_device(spec.device)
    fs = load_features(spec.data)
    for w in fs.warnings:
        log(f"warning: {w}")
    groups = None
    if spec.group_by:
        from msa.pipeline.train.splits import group_splits

        fs, groups = group_splits(fs, spec.group_by, spec.split_ratio)
        log(f"msa-train: split by {spec.group_by}: " + ", ".join(
            f"{k} {len(fs.splits[k])} rows / {len(g)} groups" for k, g in groups.items()))
    elif set(fs.splits) == {"all"}:
        raise UsageError(f"{spec.data} is not split (one 'all' split); pass --group-by COLUMN (e.g. video_id or "
                         "speaker) to split it by group, or give label.csv a mode column")
    last = config.train.select == "last"  # a fixed epoch count: the valid split is optional
    for name in ("train",) if last and "valid" not in fs.splits else ("train", "valid"):
        fs.split(name)  # a clear error before anything else
    task, fs = prepare_task(spec, cls, fs, config)
    train, valid = fs.split("train"), fs.splits.get("valid") if last else fs.split("valid")
    test = fs.splits.get("test")
    check_inputs(cls, fs)
    check_vocabulary(fs.stamp.get("text_vocab"), encoder, spec.dataset, str(spec.data))
    dims = fs.dims()
    scaling = "zscore" if spec.normalize else config.train.normalize  # --normalize asks for the z-score
    stats = norm_stats(train, kind=scaling) if scaling != "none" else None
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    per_seed: list[dict[str, Any]] = []
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
                   "stopped": result.stopped, "seconds": round(result.seconds, 2), "amp": result.amp,
                   "text_encoder": encoder["name"] if encoder else "",
                   **{f"valid_{k}": _cell(v) for k, v in result.valid.items()},
                   **{f"test_{k}": _cell(v) for k, v in (result.test or {}).items()}}
            rows.append(row)
            per_seed.append({"seed": seed, "best_epoch": result.best_epoch, "valid": result.valid, "test": result.test})
            provenance = {
                "data_file": str(Path(spec.data).resolve()), "data_sha256": fs.sha256, "splits": fs.sizes(),
                "dataset": spec.dataset, "seed": seed, "best_epoch": result.best_epoch, "preset": spec.preset,
                "overrides": spec.overrides, "train_settings": dataclasses.asdict(settings),
                "normalized": scaling, "amp": result.amp, "metrics": {"valid": result.valid, "test": result.test},
                **({"group_by": spec.group_by, "split_groups": groups} if groups else {}),
                "data_warnings": fs.warnings,
            }
            kwargs = dict(model_name=spec.model, config=config, task=task, dims=dims, specs=fs.specs, norm=stats,
                          text_encoder=encoder, provenance=_clean(provenance))
            key, higher = parse_select(settings.select)
            value = result.valid[key] if key != "last" else 0.0  # "last": nothing to compare, the first seed's bundle
            if best_value is None or (value > best_value if higher else value < best_value):
                best_value = value
                save_bundle(out, model, **kwargs)
                log(f"msa-train: seed {seed} is the best so far (valid {key} {value:.4f}); bundle written to {out}"
                    if key != "last" else f"msa-train: seed {seed}, weights after epoch {result.best_epoch}; bundle "
                    f"written to {out}")
            if spec.save_all_seeds:
                save_bundle(out / "seeds" / str(seed), model, **kwargs)
    write_results(out / RESULTS, rows)
    write_metrics(out / METRICS, task, per_seed)
    return rows


def _cell(v: Any) -> Any:
    """A results.csv cell: floats rounded; a confusion matrix as compact JSON ("[[5,1],[0,6]]")."""
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list) else round(v, 6)


def write_metrics(path: Path, task: Any, per_seed: list[dict[str, Any]]) -> None:
    """``metrics.json``: the task (with class names) and every seed's valid/test metrics, matrices included."""
    from msa.core.io import atomic_write_text

    doc = {"task": task.name, "metrics": task.metrics, "classes": list(task.classes), "seeds": per_seed}
    atomic_write_text(path, json.dumps(_clean(doc), allow_nan=False) + "\n")


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
    check_vocabulary(fs.stamp.get("text_vocab"), bundle.meta.get("text_encoder"), bundle.task.name,
                     str(fs.path) if fs.path else "the file")
    if fs.specs:
        check_specs(bundle.meta, fs.specs)
    elif any(bundle.specs.get(m) for m in ("text", "audio", "vision")):
        log("warning: the features file has no spec stamp, so its extractors cannot be checked against the bundle")
    if bundle.task.is_classes:
        from msa.pipeline.train.classes import bundle_view

        s = bundle_view(FeatureSet(splits={s.name: s}, path=fs.path, class_names=fs.class_names),
                        bundle.task.classes).splits[s.name]
    else:
        check_labels(FeatureSet(splits={s.name: s}, path=fs.path), bundle.task)
    dev = resolve_device(device)
    bundle.model.to(dev)
    loader = DeviceLoader(make_loader(s, 64, shuffle=False, stats=bundle.norm or None), dev)
    metrics = evaluate(bundle.model, loader, bundle.task)
    return {"bundle": str(bundle.path), "data": str(fs.path), "split": s.name, "n": len(s),
            "task": bundle.task.name, "classes": list(bundle.task.classes), "metrics": metrics}
