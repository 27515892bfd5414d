"""Classification metrics on class labels: confusion matrix, UAR, F1 averages, checked by hand and against sklearn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sk_confusion

from msa.models.base import Task
from msa.pipeline.train.class_metrics import class_metrics, confusion_matrix, uar
from msa.pipeline.train.metrics import compute_metrics


def one_hot_logits(pred: list[int], n: int) -> np.ndarray:
    return np.eye(n)[pred] * 3.0 - 1.0


def test_confusion_matrix_rows_are_true_columns_predicted() -> None:
    m = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_uar_is_the_mean_recall_of_the_classes_that_occur() -> None:
    # class 0: 9 of 10 right; class 1: 0 of 2 right; class 2 never occurs (not averaged in)
    y = [0] * 10 + [1] * 2
    p = [0] * 9 + [2] + [0, 0]
    m = confusion_matrix(y, p, 3)
    assert uar(m) == pytest.approx((0.9 + 0.0) / 2)
    # a majority-class guesser gets 1/C whatever the imbalance; its accuracy does not show that
    res = class_metrics(one_hot_logits([0] * 12, 3), y, 3)
    assert res["UAR"] == 0.5 and res["Accuracy"] == pytest.approx(10 / 12, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 60)
    p = np.where(rng.random(60) < 0.5, y, rng.integers(0, 5, 60))
    p[p == 4] = 3  # a class that is never predicted
    res = class_metrics(one_hot_logits(p.tolist(), 5), y, 5)
    assert res["Accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-4)
    assert res["F1_macro"] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-4)
    assert res["F1_weighted"] == pytest.approx(f1_score(y, p, average="weighted"), abs=1e-4)
    assert res["UAR"] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-4)
    assert res["confusion"] == sk_confusion(y, p, labels=range(5)).tolist()


def test_binary_adds_the_positive_class_f1_and_compute_metrics_dispatches() -> None:
    y = [0, 0, 1, 1, 1]
    p = [0, 1, 1, 1, 0]
    task = Task("binary", 0.0, 1.0, "binary", n_classes=2, classes=("no", "yes"))
    res = compute_metrics(task, None, y, one_hot_logits(p, 2))
    assert res["F1_binary"] == pytest.approx(f1_score(y, p), abs=1e-4)
    multi = Task("custom", 0.0, 1.0, "classification", n_classes=2, classes=("no", "yes"))
    assert "F1_binary" not in compute_metrics(multi, None, y, one_hot_logits(p, 2))
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(task, np.zeros(5), y)
