"""Classification tasks on class labels: the Task, the label view the trainer sees, class weights.

A features file carries class labels as ``classification_labels`` (indices) plus the class names in its
stamp (msa-extract writes both from label.csv's ``class`` column). ``msa-train --task classification``
trains on them with cross-entropy; ``--dataset binary`` is the two-class preset (humour detection and
the like: it adds the positive class's F1, the positive class being the second name in order).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from msa.core.errors import DataError, UsageError
from msa.pipeline.train.data import FeatureSet

if TYPE_CHECKING:
    from msa.models.base import Task

BINARY = "binary"
WEIGHT_MODES = ("balanced",)


def class_task(dataset: str, fs: FeatureSet, class_weights: str | None = None) -> "Task":
    """The classification Task of ``fs``: its class names, the metric family, optional class weights.

    Every class of valid/test must occur in train, and ``--dataset binary`` needs exactly two classes.
    """
    from msa.models.base import Task

    names = fs.class_names
    if not names:
        raise DataError(f"{fs._where()}has no class labels ('classification_labels'); add a 'class' column to "
                        "label.csv and re-extract, or train a regression task")
    train = fs.split("train")
    seen = set(np.unique(train.classes).tolist())  # type: ignore[arg-type]
    for s in fs.splits.values():
        unseen = sorted(set(np.unique(s.classes).tolist()) - seen)  # type: ignore[arg-type]
        if unseen:
            raise DataError(f"{fs._where()}split {s.name!r} has class(es) {', '.join(names[i] for i in unseen)} "
                            "that never occur in train; a model cannot learn them")
    if dataset == BINARY and len(names) != 2:
        raise DataError(f"{fs._where()}the binary preset needs exactly 2 classes, the file has {len(names)}: "
                        f"{', '.join(names)}; use --task classification with another --dataset")
    weights = parse_class_weights(class_weights, train.classes, len(names))  # type: ignore[arg-type]
    return Task(name=dataset, low=0.0, high=float(len(names) - 1), metrics=BINARY if dataset == BINARY else
                "classification", n_classes=len(names), classes=tuple(names), class_weights=weights)


def parse_class_weights(spec: str | None, train_classes: np.ndarray, n_classes: int) -> tuple[float, ...]:
    """``None`` -> no weights; ``balanced`` -> n / (C * count_c) on train (sklearn's rule); ``w1,w2,...``."""
    if not spec:
        return ()
    if spec == "balanced":
        counts = np.bincount(train_classes, minlength=n_classes).astype(np.float64)
        if (counts == 0).any():
            raise DataError("--class-weights balanced: some class has no training sample")
        return tuple(round(float(w), 6) for w in counts.sum() / (n_classes * counts))
    try:
        weights = tuple(float(w) for w in spec.split(","))
    except ValueError as e:
        raise UsageError(f"--class-weights: expected 'balanced' or {n_classes} comma-separated numbers, got {spec!r}") from e
    if len(weights) != n_classes or not all(np.isfinite(w) and w > 0 for w in weights):
        raise UsageError(f"--class-weights: expected {n_classes} positive numbers (one per class), got {spec!r}")
    return weights


def class_view(fs: FeatureSet) -> FeatureSet:
    """``fs`` with every split's labels replaced by its class indices (what models and metrics read)."""
    splits = {k: dataclasses.replace(s, labels=s.classes.astype(np.float32)) for k, s in fs.splits.items()}  # type: ignore[union-attr]
    return dataclasses.replace(fs, splits=splits)


def bundle_view(fs: FeatureSet, classes: tuple[str, ...]) -> FeatureSet:
    """``fs`` relabelled with a trained bundle's class indices, matched by name (the file may hold a subset)."""
    if not fs.class_names:
        raise DataError(f"{fs._where()}has no class labels; the bundle is a classifier of {', '.join(classes)}")
    unknown = [c for c in fs.class_names if c not in classes]
    if unknown:
        raise DataError(f"{fs._where()}has class(es) {', '.join(unknown)} the bundle does not know "
                        f"(it predicts {', '.join(classes)})")
    index = np.array([classes.index(c) for c in fs.class_names], dtype=np.int64)
    splits = {k: dataclasses.replace(s, classes=index[s.classes]) for k, s in fs.splits.items()}  # type: ignore[index]
    return class_view(dataclasses.replace(fs, splits=splits, class_names=classes))
