"""Metric definitions against hand-computed values (MODELS.md section 0)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from msa.models.base import Task
from msa.core.labels import three_classes
from msa.pipeline.train import metrics as M


def test_mosi_hand_computed() -> None:
    p = [2.6, -0.4, 0.5, 1.5, -2.5, 0.0]
    y = [2.2, 0.0, -0.5, 2.0, -2.4, 0.4]
    m = M.mosi_metrics(p, y)
    assert list(m) == ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"]
    assert m["Has0_acc_2"] == 0.6667  # zero counts as non-negative: y=0 vs p=-0.4 is a miss
    assert m["Has0_F1_score"] == 0.6667  # (4*0.75 + 2*0.5) / 6
    assert m["Non0_acc_2"] == 0.6  # y == 0 dropped; p = 0.0 is not positive
    assert m["Non0_F1_score"] == 0.6  # (3*2/3 + 2*0.5) / 5
    assert m["Mult_acc_7"] == 0.8333  # round-half-even: 0.5 -> 0 matches -0.5 -> -0; 2.6 -> 3 vs 2.2 -> 2
    assert m["Mult_acc_5"] == 1.0  # clipped to +-2 both become 2
    assert m["MAE"] == 0.4667  # unclipped
    assert m["Corr"] == round(float(np.corrcoef(p, y)[0, 1]), 4)


def test_mosi_mae_and_corr_are_unclipped() -> None:
    m = M.mosi_metrics([5.0, -1.0], [3.0, -1.0])
    assert m["MAE"] == 1.0  # |5 - 3| / 2, no clipping to 3
    assert m["Mult_acc_7"] == 1.0  # but the class accuracy clips


def test_round_half_even_not_floor() -> None:
    # floor(x + 0.5) would put 0.5 and 1.5 in classes 1 and 2; numpy gives 0 and 2
    m = M.mosi_metrics([0.5, 1.5, 2.5, -0.5], [0.0, 2.0, 2.0, 0.0])
    assert m["Mult_acc_7"] == 1.0


def test_weighted_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 3, size=25)
        p = rng.integers(0, 4, size=25)  # a class only predicted
        assert M.weighted_f1(t, p) == pytest.approx(f1_score(t, p, average="weighted", zero_division=0), abs=1e-12)


def test_sims_bin_edges_are_left_open_right_closed() -> None:
    v = np.array([-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0], dtype=np.float32)
    assert M.sims_classes(v, 2).tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert M.sims_classes(v, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert M.sims_classes(v, 5).tolist() == [0, 0, 1, 2, 2, 3, 4]
    just = np.array([-0.69, -0.09, 0.11, 0.71], dtype=np.float32)
    assert M.sims_classes(just, 5).tolist() == [1, 2, 3, 4]


def test_sims_hand_computed_on_clipped_values() -> None:
    p = [-0.8, -0.05, 0.1, 0.65, 1.4]
    y = [-1.0, -0.2, 0.0, 0.8, 1.0]
    m = M.sims_metrics(p, y)
    assert list(m) == ["Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"]
    assert m["Mult_acc_2"] == 0.8
    assert m["Mult_acc_3"] == 0.8
    assert m["Mult_acc_5"] == 0.6
    assert m["F1_score"] == 0.8
    assert m["MAE"] == 0.12  # 1.4 is clipped to 1.0 first (unclipped MAE would be 0.2)
    pc = np.clip(np.array(p, dtype=np.float32), -1, 1).astype(np.float64)
    assert m["Corr"] == round(float(np.corrcoef(pc, np.array(y, dtype=np.float32))[0, 1]), 4)


def test_ccc_hand_value_uses_population_moments() -> None:
    # sxy = 1, sx^2 = 2/3, sy^2 = 2, (mean diff)^2 = 1 -> 2 / (11/3) = 6/11 (sample moments would give 0.6)
    assert M.ccc([1, 2, 3], [2, 2, 5]) == pytest.approx(6 / 11)


def test_ccc_properties() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(50)
    x -= x.mean()  # CCC(x, -x) = -1 needs a zero mean (otherwise the mean gap is penalised too)
    assert M.ccc(x, x) == pytest.approx(1.0)
    assert M.ccc(x, x + 0.5) < 1.0  # a shift is penalised
    assert M.pearson(x, x + 0.5) == pytest.approx(1.0)  # unlike Pearson
    assert M.ccc(x, -x) == pytest.approx(-1.0)
    for _ in range(20):
        a, b = rng.standard_normal(30), rng.standard_normal(30) * 2 + 1
        assert abs(M.ccc(a, b)) <= abs(M.pearson(a, b)) + 1e-12


def test_phq8_metrics() -> None:
    m = M.phq8_metrics([1, 2, 3], [2, 2, 5])
    assert m == {"CCC": round(6 / 11, 4), "MAE": 1.0, "RMSE": round(float(np.sqrt(5 / 3)), 4)}


def test_classification_from_logits_and_from_pred() -> None:
    y = [-0.5, -0.1, 0.0, 0.1, 0.2, 0.9]  # -> neg, neg, neu, neu, pos, pos
    assert three_classes(y).tolist() == [0, 0, 1, 1, 2, 2]
    logits = np.eye(3)[[0, 0, 1, 2, 2, 2]]  # one neutral misclassified as positive
    task = Task("sims", -1, 1, "sims", n_classes=3)
    m = M.compute_metrics(task, pred=np.zeros(6), labels=y, logits=logits)
    assert m["Acc_3"] == round(5 / 6, 4)
    assert m["F1_score"] == round(f1_score([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2], average="weighted"), 4)
    m2 = M.compute_metrics(task, pred=np.array([-1, -1, 0, 1, 1, 1]), labels=y)
    assert m2 == m


def test_compute_metrics_dispatches_by_family() -> None:
    p, y = [0.1, -0.2, 0.5], [0.2, -0.4, 0.4]
    assert set(M.compute_metrics(Task("mosi", -3, 3, "mosi"), p, y)) == set(M.mosi_metrics(p, y))
    assert set(M.compute_metrics(Task("sims", -1, 1, "sims"), p, y)) == set(M.sims_metrics(p, y))
    assert set(M.compute_metrics(Task("phq8", 0, 24, "phq8"), p, y)) == {"CCC", "MAE", "RMSE"}
    assert set(M.compute_metrics(Task("custom", 0, 1, "regression"), p, y)) == {"MAE", "RMSE", "Corr", "CCC"}
    with pytest.raises(ValueError, match="unknown metric family"):
        M.compute_metrics(Task("x", 0, 1, "nope"), p, y)
