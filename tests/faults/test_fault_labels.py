"""A bad label.csv: every bad row reported at once, before any extraction starts (no cache, no extractor call)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from faultkit import calls, extract_args, judge, run_inproc

HEADER = "video_id,clip_id,text,label,annotation,mode"


def dataset(root: Path, media: dict[str, Path], rows: list[str], header: str = HEADER,
            clips: tuple[str, ...] = ("a", "b", "c")) -> Path:
    for cid in clips:
        dest = root / "Raw" / "v" / f"{cid}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(media["good"], dest)
    (root / "label.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


CASES = {  # name -> (header, rows, texts every report must contain)
    "missing_columns": ("video_id,clip_id,text,annotation,mode", ["v,a,hi,x,train"], ["missing column(s) label"]),
    "duplicate_ids": (HEADER, ["v,a,hi,1,x,train", "v,b,yo,1,x,train", "v,a,again,2,x,test"],
                      ["line 4: duplicate id v$_$a (first on line 2)"]),
    "nan_labels": (HEADER, ["v,a,hi,nan,x,train", "v,b,yo,,x,train", "v,c,ok,inf,x,test"],
                   ["line 2: label is not a number: 'nan'", "line 3: label is not a number: ''",
                    "line 4: label is not a number: 'inf'"]),
    "unknown_mode": (HEADER, ["v,a,hi,1,x,training", "v,b,yo,1,x,develop", "v,c,ok,1,x,test"],
                     ["line 2: unknown mode 'training'", "line 3: unknown mode 'develop'"]),
    "missing_media": (HEADER, ["v,a,hi,1,x,train", "v,zz,yo,1,x,train", "w,a,ok,1,x,test"],
                      ["line 3: no media at Raw/v/zz.", "line 4: no media at Raw/w/a."]),
    "no_rows": (HEADER, [], ["no rows"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_label_csv_is_reported_before_extraction(case: str, media: dict[str, Path], tmp_path: Path,
                                                     capsys: Any) -> None:
    header, rows, texts = CASES[case]
    root = dataset(tmp_path / "ds", media, rows, header)
    out, log = tmp_path / "out", tmp_path / "calls.log"
    res = run_inproc("extract", extract_args(root, out, log=log), capsys)
    judge(res, names=[root / "label.csv"], reason=["problem", *texts],
          prog="msa-extract")
    assert calls(log) == [] and not (out / "cache").exists()  # nothing ran
    report = (out / "label_errors.txt").read_text().splitlines()
    assert all(any(t in line for line in report) for t in texts), report


def test_every_bad_row_is_listed_in_one_report(media: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    rows = [f"v,a,fine,{i % 3}.0,x,train" if i == 0 else f"v,x{i},t,{('nan', '1', 'oops')[i % 3]},x,"
            f"{('train', 'bogus')[i % 2]}" for i in range(40)]
    root = dataset(tmp_path / "ds", media, rows)
    out, log = tmp_path / "out", tmp_path / "calls.log"
    res = judge(run_inproc("extract", extract_args(root, out, log=log), capsys), names=[root / "label.csv"],
                reason=["has 39 problem(s)", "and 27 more", "label_errors.txt"], prog="msa-extract")
    report = (out / "label_errors.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in report] == [f"line {i + 2}" for i in range(1, 40)]
    assert "unknown mode 'bogus'" in report[0] and "no media at Raw/v/x1." in report[0]
    assert "label is not a number: 'oops'" in report[1] and calls(log) == []
    assert len(res.err) < 3000  # the terminal gets the first rows; the file has them all


def test_label_csv_not_utf8_or_not_csv(media: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    root = dataset(tmp_path / "ds", media, [])
    (root / "label.csv").write_bytes(f"{HEADER}\nv,a,caf\xe9,1,x,train\n".encode("latin-1"))
    judge(run_inproc("extract", extract_args(root, tmp_path / "o1"), capsys), names=[root / "label.csv"],
          reason="not UTF-8", prog="msa-extract")
    (root / "label.csv").write_bytes(b"")
    judge(run_inproc("extract", extract_args(root, tmp_path / "o2"), capsys), names=[root / "label.csv"],
          reason="missing column(s) video_id, clip_id, label", prog="msa-extract")
    (root / "label.csv").write_bytes(b"\x00\x01binary\x00,\xff\xfe\n" * 20)
    judge(run_inproc("extract", extract_args(root, tmp_path / "o3"), capsys), names=[root / "label.csv"],
          prog="msa-extract")
