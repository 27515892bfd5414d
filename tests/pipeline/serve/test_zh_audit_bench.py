"""bench/zh_snownlp_rest.py's audit parts: the blind sample is seeded, stratified and leaves out the first
(seen) draw; judgments are read strictly; the estimate weights misses and hits back to the pool."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def zr():
    spec = importlib.util.spec_from_file_location("zh_snownlp_rest", BENCH / "zh_snownlp_rest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pool(n_miss: int = 200, n_hit: int = 800) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels alternate in sign; the bundle's score agrees on the hits and flips the misses."""
    labels = np.where(np.arange(n_miss + n_hit) % 2 == 0, 1.0, -1.0)
    right = np.random.default_rng(3).permutation(np.r_[np.zeros(n_miss, bool), np.ones(n_hit, bool)])
    return right, np.where(right, labels, -labels) * 1.5, labels


def test_sample_is_stratified_seeded_and_leaves_out_the_seen_draw(zr) -> None:
    right, _, _ = _pool()
    idx = zr.audit_sample(right)
    assert len(idx) == len(set(idx)) == 100
    assert (~right[idx]).sum() == 60 and right[idx].sum() == 40
    assert np.array_equal(idx, zr.audit_sample(right))
    seen_rng = np.random.default_rng(zr.AUDIT_SEEN_SEED)
    seen = set(seen_rng.choice(np.flatnonzero(~right), 60, replace=False))
    seen |= set(seen_rng.choice(np.flatnonzero(right), 40, replace=False))
    assert not seen & set(idx)


def test_estimate_weights_misses_and_hits_back_to_the_pool(zr) -> None:
    right, pred, labels = _pool()
    idx = zr.audit_sample(right)
    miss_rows = np.flatnonzero(~right[idx])
    judged = np.sign(labels[idx]).astype(int)  # the reader agrees with every label ...
    judged[miss_rows[:20]] = 0  # ... but finds 20 misses unclear
    judged[miss_rows[20:40]] = np.sign(pred[idx][miss_rows[20:40]])  # and 20 mislabelled
    r = zr.audit_estimate(right, pred, labels, idx, judged, n_boot=200)
    clear = 0.8 + 0.2 * 40 / 60
    assert r["clear_share"] == pytest.approx(clear)
    assert r["acc"] == pytest.approx((0.8 + 0.2 * 20 / 60) / clear)
    assert r["label_agreement"] == pytest.approx((0.8 + 0.2 * 20 / 60) / clear)
    assert r["low"] <= r["acc"] <= r["high"] < 1.0


def test_judgments_are_read_strictly(zr, tmp_path: Path) -> None:
    path = tmp_path / "j.txt"
    path.write_text("# header\n00 12 +\n01 7 ?  # a reply\n\n02 3 -\n", encoding="utf-8")
    idx, judged = zr.read_judgments(path)
    assert idx.tolist() == [12, 7, 3] and judged.tolist() == [1, 0, -1]
    path.write_text("00 12 pos\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        zr.read_judgments(path)
    assert "\n" not in str(e.value.code) and "00 12 pos" in str(e.value.code)


def test_committed_judgments_are_a_full_sample(zr) -> None:
    idx, judged = zr.read_judgments(BENCH / "zh_audit_judgments.txt")
    assert len(idx) == len(set(idx.tolist())) == 100 and set(judged.tolist()) <= {-1, 0, 1}
