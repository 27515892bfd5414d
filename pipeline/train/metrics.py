"""The field's evaluation metrics, exactly as MMSA and AVEC2019 define them (MODELS.md section 0).

Families (``Task.metrics``): ``mosi`` (MOSI/MOSEI), ``sims`` (CH-SIMS / SIMS v2), ``phq8`` (AVEC2019
depression: CCC, MAE, RMSE), ``regression`` (custom ranges: MAE, RMSE, Corr, CCC) and 3-class
classification (``Task.n_classes == 3``: Acc_3 and weighted F1); tasks whose labels are classes use
``class_metrics`` (accuracy, F1, UAR, confusion matrix). Every value is rounded to 4 decimals
with numpy's round-half-to-even, as MMSA does. numpy only: importing this module is cheap.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from msa.core.labels import three_classes

# Left-open, right-closed SIMS buckets; the outer edges -1.01/1.01 are MMSA's.
SIMS_EDGES: dict[int, tuple[float, ...]] = {
    2: (-1.01, 0.0, 1.01),
    3: (-1.01, -0.1, 0.1, 1.01),
    5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),
}
FAMILIES = ("mosi", "sims", "phq8", "regression", "classification", "binary")


def _flat(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    return a


def _r4(v: float) -> float:
    return float(np.round(v, 4))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """sklearn's ``f1_score(average='weighted')``: per-class F1 weighted by true support.

    Classes are the union of those in ``y_true`` and ``y_pred``; a class seen only in the
    predictions has support 0 and so weight 0.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.size == 0:
        return 0.0
    total = 0.0
    for c in np.union1d(y_true, y_pred):
        tp = float(np.sum((y_true == c) & (y_pred == c)))
        fp = float(np.sum((y_true != c) & (y_pred == c)))
        fn = float(np.sum((y_true == c) & (y_pred != c)))
        denom = 2 * tp + fp + fn
        f1 = 2 * tp / denom if denom > 0 else 0.0
        total += f1 * float(np.sum(y_true == c))
    return total / y_true.size


def pearson(p: np.ndarray, y: np.ndarray) -> float:
    """``np.corrcoef(p, y)[0, 1]``; NaN when either side is constant (reported, not hidden)."""
    if p.size < 2 or np.std(p) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(p, y)[0, 1])


def ccc(x: Any, y: Any) -> float:
    """Lin's concordance correlation coefficient with population (1/N) moments."""
    x, y = _flat(x), _flat(y)
    mx, my = x.mean(), y.mean()
    sxy = np.mean((x - mx) * (y - my))
    denom = x.var() + y.var() + (mx - my) ** 2
    if denom == 0:
        return float("nan")
    return float(2 * sxy / denom)


def mosi_metrics(pred: Any, labels: Any) -> dict[str, float]:
    """MMSA ``__eval_mosei_regression`` (MOSI and MOSEI): MAE/Corr on the unclipped values."""
    p, y = _flat(pred), _flat(labels)
    non0 = y != 0
    return {
        "Has0_acc_2": _r4(np.mean((p >= 0) == (y >= 0))),
        "Has0_F1_score": _r4(weighted_f1(y >= 0, p >= 0)),
        "Non0_acc_2": _r4(np.mean((p[non0] > 0) == (y[non0] > 0))) if non0.any() else float("nan"),
        "Non0_F1_score": _r4(weighted_f1(y[non0] > 0, p[non0] > 0)) if non0.any() else float("nan"),
        "Mult_acc_5": _r4(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2)))),
        "Mult_acc_7": _r4(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3)))),
        "MAE": _r4(np.mean(np.abs(p - y))),
        "Corr": _r4(pearson(p, y)),
    }


def sims_classes(values: Any, n: int) -> np.ndarray:
    """Bucket already-clipped values into ``n`` SIMS classes (left-open, right-closed).

    Comparisons run in float32, as in MMSA (its arrays are float32 and numpy casts the edges to
    float32), so a label stored as float32 0.1 falls in the neutral bucket, not the positive one.
    """
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    edges = np.asarray(SIMS_EDGES[n], dtype=np.float32)
    out = np.full(v.shape, -1, dtype=np.int64)
    for i in range(n):
        out[(v > edges[i]) & (v <= edges[i + 1])] = i
    return out


def sims_metrics(pred: Any, labels: Any) -> dict[str, float]:
    """MMSA ``__eval_sims_regression``: everything, MAE and Corr included, on values clipped to [-1, 1]."""
    p32 = np.clip(np.asarray(pred, dtype=np.float32).reshape(-1), -1.0, 1.0)
    y32 = np.clip(np.asarray(labels, dtype=np.float32).reshape(-1), -1.0, 1.0)
    c = {n: (sims_classes(p32, n), sims_classes(y32, n)) for n in (2, 3, 5)}
    p, y = p32.astype(np.float64), y32.astype(np.float64)
    return {
        "Mult_acc_2": _r4(np.mean(c[2][0] == c[2][1])),
        "Mult_acc_3": _r4(np.mean(c[3][0] == c[3][1])),
        "Mult_acc_5": _r4(np.mean(c[5][0] == c[5][1])),
        "F1_score": _r4(weighted_f1(c[2][1], c[2][0])),
        "MAE": _r4(np.mean(np.abs(p - y))),
        "Corr": _r4(pearson(p, y)),
    }


def phq8_metrics(pred: Any, labels: Any) -> dict[str, float]:
    """AVEC2019: CCC (population moments), MAE and RMSE, on the PHQ-8 scale (0..24)."""
    p, y = _flat(pred), _flat(labels)
    return {
        "CCC": _r4(ccc(p, y)),
        "MAE": _r4(np.mean(np.abs(p - y))),
        "RMSE": _r4(np.sqrt(np.mean((p - y) ** 2))),
    }


def regression_metrics(pred: Any, labels: Any) -> dict[str, float]:
    """Generic metrics for custom label ranges."""
    p, y = _flat(pred), _flat(labels)
    return {
        "MAE": _r4(np.mean(np.abs(p - y))),
        "RMSE": _r4(np.sqrt(np.mean((p - y) ** 2))),
        "Corr": _r4(pearson(p, y)),
        "CCC": _r4(ccc(p, y)),
    }


def classification_metrics(pred_class: Any, labels: Any) -> dict[str, float]:
    """3-class accuracy and weighted F1. ``pred_class`` in {0, 1, 2}; ``labels`` are regression labels."""
    pc = np.asarray(pred_class).reshape(-1).astype(np.int64)
    yc = three_classes(labels)
    return {"Acc_3": _r4(np.mean(pc == yc)), "F1_score": _r4(weighted_f1(yc, pc))}


def compute_metrics(task: Any, pred: Any, labels: Any, logits: Any = None) -> dict[str, float]:
    """Metrics for a ``Task``. Classification uses ``logits`` (N, 3) when given, else ``pred`` in {-1, 0, 1};
    a task whose labels are classes (``task.classes``) gets :func:`class_metrics.class_metrics`."""
    if getattr(task, "classes", ()):
        from msa.pipeline.train.class_metrics import class_metrics

        if logits is None:
            raise ValueError("a classification task needs the model's logits")
        return class_metrics(logits, labels, len(task.classes), binary=task.metrics == "binary")
    if getattr(task, "n_classes", 0):
        if task.n_classes != 3:
            raise ValueError(f"only 3-class classification is defined, got n_classes={task.n_classes}")
        cls = np.argmax(np.asarray(logits), axis=-1) if logits is not None else np.rint(_flat(pred)).astype(np.int64) + 1
        return classification_metrics(cls, labels)
    family = task.metrics
    if family == "mosi":
        return mosi_metrics(pred, labels)
    if family == "sims":
        return sims_metrics(pred, labels)
    if family == "phq8":
        return phq8_metrics(pred, labels)
    if family == "regression":
        return regression_metrics(pred, labels)
    raise ValueError(f"unknown metric family {family!r}; known: {', '.join(FAMILIES)}")

