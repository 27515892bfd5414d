"""Metrics of classification tasks whose labels are classes (``Task.classes``): numpy only.

Accuracy, macro and weighted F1, UAR (unweighted average recall, the speech-emotion field's headline
figure: the mean of per-class recalls, so a majority-class guesser scores 1/C) and the confusion matrix
(rows: true class, columns: predicted class, in the task's class order). Definitions match sklearn's
``accuracy_score``, ``f1_score(average="macro"|"weighted")`` and ``balanced_accuracy_score``: F1 averages
run over the classes present in the labels or the predictions, recalls over the classes present in the
labels. The binary preset adds ``F1_binary``, the F1 of the positive class (index 1).
"""
from __future__ import annotations

from typing import Any

import numpy as np

CONFUSION = "confusion"  # the one non-scalar entry: a list of rows


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: ``m[i, j]`` = samples of true class i predicted as j."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} labels but {p.size} predictions")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class recall, F1 and support from a confusion matrix (0 where undefined)."""
    tp = np.diag(m).astype(np.float64)
    support = m.sum(axis=1).astype(np.float64)
    predicted = m.sum(axis=0).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = support + predicted  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return recall, f1, support


def uar(m: np.ndarray) -> float:
    """Unweighted average recall over the classes that occur in the labels (balanced accuracy)."""
    recall, _, support = per_class(m)
    present = support > 0
    return float(recall[present].mean()) if present.any() else 0.0


def class_metrics(logits: Any, labels: Any, n_classes: int, binary: bool = False) -> dict[str, Any]:
    """Accuracy, F1_macro, F1_weighted, UAR (+ F1_binary) rounded to 4 decimals, and the confusion matrix."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1).astype(np.int64)
    p = np.argmax(np.asarray(logits, dtype=np.float64).reshape(y.size, n_classes), axis=-1)
    m = confusion_matrix(y, p, n_classes)
    _, f1, support = per_class(m)
    seen = (support > 0) | (m.sum(axis=0) > 0)
    n = max(int(support.sum()), 1)
    out: dict[str, Any] = {
        "Accuracy": float(np.trace(m)) / n,
        "F1_macro": float(f1[seen].mean()) if seen.any() else 0.0,
        "F1_weighted": float((f1 * support).sum()) / n,
        "UAR": uar(m),
    }
    if binary:
        out["F1_binary"] = float(f1[1])
    out = {k: float(np.round(v, 4)) for k, v in out.items()}
    out[CONFUSION] = m.tolist()
    return out
