"""Input discovery: folders, single files, MMSA datasets (label.csv validation) and sidecar transcripts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from msa.core.errors import DataError, ExtractionError, UsageError
from msa.extractors.base import Word
from msa.pipeline.extract.sources import (Item, LabelCsvError, discover, read_sidecar, subtitle_suffix,
                                          subtitle_words)

HEADER = "video_id,clip_id,text,label,annotation,mode\n"


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dataset(root: Path, csv: str, clips: list[str]) -> Path:
    (root / "label.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "label.csv").write_text(csv)
    for c in clips:
        touch(root / "Raw" / c)
    return root


def test_folder_is_searched_recursively_for_every_media_extension(tmp_path: Path) -> None:
    names = ["a.mp4", "b.MOV", "c.avi", "d.mkv", "e.webm", "f.mpg", "g.wav", "h.flac", "i.mp3", "j.aiff"]
    for n in names:
        touch(tmp_path / "sub" / "deeper" / n)
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.mp4")
    touch(tmp_path / "top.mp4")
    src = discover(tmp_path)
    assert src.kind == "folder" and not src.has_modes
    assert sorted(it.path.name for it in src.items) == sorted(names + ["top.mp4"])
    top = next(it for it in src.items if it.path.name == "top.mp4")
    deep = next(it for it in src.items if it.path.name == "a.mp4")
    assert top.video_id == tmp_path.name and top.clip_id == "top"
    assert deep.video_id == "sub/deeper" and deep.id == "sub/deeper$_$a"


def test_odd_names_and_a_folder_named_like_a_clip_are_listed(tmp_path: Path) -> None:
    for n in ("with space.mp4", "ünïcode.wav", "-leading-dash.mkv"):
        touch(tmp_path / n)
    (tmp_path / "folder.mp4").mkdir()
    touch(tmp_path / "folder.mp4" / "inner.mp4")
    names = sorted(it.path.relative_to(tmp_path).as_posix() for it in discover(tmp_path).items)
    assert names == ["-leading-dash.mkv", "folder.mp4", "folder.mp4/inner.mp4", "with space.mp4", "ünïcode.wav"]


def test_symlink_loops_are_not_followed_forever(tmp_path: Path) -> None:
    touch(tmp_path / "d" / "clip.mp4")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")  # d/loop -> d
    os.symlink(tmp_path, tmp_path / "d" / "up")  # d/up -> root
    src = discover(tmp_path)
    assert [it.path.name for it in src.items] == ["clip.mp4"]


def test_same_stem_in_one_folder_keeps_both_apart(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "a.wav")
    ids = {it.clip_id for it in discover(tmp_path).items}
    assert ids == {"a.mp4", "a.wav"}


def test_single_file_and_bad_inputs(tmp_path: Path) -> None:
    clip = touch(tmp_path / "one.webm")
    src = discover(clip)
    assert src.kind == "file" and [it.path for it in src.items] == [clip]
    with pytest.raises(UsageError, match="not found"):
        discover(tmp_path / "missing")
    with pytest.raises(UsageError, match="not a media file"):
        discover(touch(tmp_path / "x.txt"))
    with pytest.raises(UsageError, match="no media files"):
        discover(touch(tmp_path / "empty" / "readme.md").parent)


def test_dataset_rows_labels_modes_and_sub_labels(tmp_path: Path) -> None:
    csv = ("video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
           "v1,1,hello there,1.5,1,2,0.5,Positive,train\n"
           "v1,2,,-0.5,0,-1,0,Negative,valid\n"
           "v2,1,third one,0,0,0,0,Neutral,test\n")
    root = dataset(tmp_path, csv, ["v1/1.mp4", "v1/2.wav", "v2/1.mp4", "v2/1.wav", "v2/1.txt"])
    for src in (discover(root), discover(root / "label.csv")):
        assert src.kind == "dataset" and src.has_modes and src.sub_label_keys == ("T", "A", "V")
        a, b, c = src.items
        assert (a.id, a.text, a.label, a.mode, a.annotation) == ("v1$_$1", "hello there", 1.5, "train", "Positive")
        assert a.sub_labels == {"T": 1.0, "A": 2.0, "V": 0.5}
        assert b.text is None and b.path.name == "2.wav"  # empty text falls through to sidecar / ASR
        assert c.path.name == "1.mp4"  # video preferred over audio for the same clip id


def test_dev_and_val_modes_mean_valid_as_in_msa_eval(tmp_path: Path) -> None:
    """One label.csv reader and one split vocabulary: msa-extract accepts what msa-eval accepts."""
    from msa.pipeline.serve.label_eval import label_csv_rows

    csv = HEADER + "v,1,good,1.0,,dev\nv,2,bad,-1.0,,val\nv,3,ok,0.0,,train\n"
    root = dataset(tmp_path, csv, ["v/1.mp4", "v/2.mp4", "v/3.mp4"])
    assert [it.mode for it in discover(root).items] == ["valid", "valid", "train"]
    rows = label_csv_rows(root / "label.csv")
    assert sorted(rows) == ["train", "valid"] and len(rows["valid"]) == 2
    assert [r["text"] for r in label_csv_rows(root / "label.csv", "dev")["valid"]] == ["good", "bad"]


def test_dataset_without_mode_column_has_no_modes(tmp_path: Path) -> None:
    root = dataset(tmp_path, "video_id,clip_id,label\nv,1,0.5\n", ["v/1.mp4"])
    src = discover(root)
    assert not src.has_modes and src.items[0].mode is None and src.items[0].text is None


def test_every_bad_row_is_reported_before_extraction(tmp_path: Path) -> None:
    csv = HEADER + ("v,1,a,0.1,,train\n"
                    "v,1,dup,0.2,,train\n"  # duplicate id
                    "v,2,b,nan,,valid\n"  # NaN label
                    "v,3,c,0.3,,training\n"  # unknown mode
                    "v,4,d,0.4,,test\n"  # media missing
                    "v,5,e,abc,,devel\n")  # two problems in one row
    root = dataset(tmp_path, csv, ["v/1.mp4", "v/2.mp4", "v/3.mp4", "v/5.mp4"])
    with pytest.raises(LabelCsvError) as info:
        discover(root)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert "duplicate id v$_$1 (first on line 2)" in problems[0]
    assert "label is not a number: 'nan'" in problems[1]
    assert "unknown mode 'training'" in problems[2]
    assert "no media at Raw/v/4." in problems[3]
    assert "label is not a number: 'abc'" in problems[4] and "unknown mode 'devel'" in problems[4]
    assert info.value.reason == "bad_label_csv" and "5 problem(s)" in info.value.one_line()


def test_missing_columns_and_partial_sub_labels(tmp_path: Path) -> None:
    root = dataset(tmp_path / "a", "video_id,text,label\nv,hi,1\n", [])
    with pytest.raises(LabelCsvError, match="missing column.*clip_id"):
        discover(root)
    csv = "video_id,clip_id,label,label_T\nv,1,1,0.5\nv,2,1,\n"
    root = dataset(tmp_path / "b", csv, ["v/1.mp4", "v/2.mp4"])
    with pytest.raises(LabelCsvError, match="line 3: label_T is not a number"):
        discover(root)


def test_class_column_makes_label_optional_and_other_columns_are_kept(tmp_path: Path) -> None:
    csv = ("video_id,clip_id,class,speaker,mode\n"
           "a1,u1,sad,anna,train\na1,u2,angry,anna,train\nb2,u1,sad,bert,valid\n")
    src = discover(dataset(tmp_path, csv, ["a1/u1.wav", "a1/u2.wav", "b2/u1.wav"]))
    assert src.class_names == ("angry", "sad")  # sorted, so the order never depends on row order
    assert [it.label_class for it in src.items] == ["sad", "angry", "sad"]
    assert all(it.label is None for it in src.items)
    assert src.extra_columns == ("speaker",)
    assert [dict(it.columns)["speaker"] for it in src.items] == ["anna", "anna", "bert"]


def test_class_column_problems_are_reported(tmp_path: Path) -> None:
    csv = "video_id,clip_id,label,class\na,1,0.5,\na,2,oops,happy\na,3,,happy\n"
    with pytest.raises(LabelCsvError) as e:
        discover(dataset(tmp_path, csv, ["a/1.mp4", "a/2.mp4", "a/3.mp4"]))
    assert e.value.problems == ["line 2: empty class", "line 3: label is not a number: 'oops'"]


def test_label_csv_not_utf8(tmp_path: Path) -> None:
    touch(tmp_path / "label.csv", HEADER.encode() + b"v,1,\xff\xfe,1,,train\n")
    with pytest.raises(DataError, match="not UTF-8"):
        discover(tmp_path)


def test_sidecar_precedence_and_parsing(tmp_path: Path) -> None:
    clip = touch(tmp_path / "c.mp4")
    src = discover(clip)
    assert src.items[0].sidecar is None
    (tmp_path / "c.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n<i>Hello</i> there\n\n"
                                    "2\n00:00:01,000 --> 00:00:02,500\n{\\an8}general Kenobi\n")
    assert src.items[0].sidecar == tmp_path / "c.srt"
    text, words = read_sidecar(tmp_path / "c.srt")
    assert text == "Hello there general Kenobi"
    # each cue's span shared out over its words by length: "Hello" 5 of 10 characters of the first second
    assert words == (Word("Hello", 0.0, 0.5), Word("there", 0.5, 1.0), Word("general", 1.0, 1.808),
                     Word("Kenobi", 1.808, 2.5))  # 7 and 6 of 13 characters of 1.5 s
    (tmp_path / "c.txt").write_text("  plain\ntext  ")
    assert src.items[0].sidecar == tmp_path / "c.txt"  # .txt wins over .srt
    assert read_sidecar(tmp_path / "c.txt") == ("plain text", ())  # no times in plain text
    given = tmp_path / "elsewhere.vtt"
    given.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n")
    assert Item("v", "c", clip, transcript_file=given).sidecar == given  # msa-predict --transcript comes first


def test_vtt_parsing_skips_header_notes_and_cue_ids() -> None:
    vtt = ("WEBVTT - title\n\nNOTE a comment\nspanning lines\n\nSTYLE\n::cue { color: red }\n\n"
           "intro\n00:01.000 --> 00:02.000 align:start\n<v Roger>We are <c.loud>in</c> 1999\n\n"
           "00:00:02.000 --> 00:00:03.000\nokay\n")
    words = subtitle_words(vtt)
    assert " ".join(w.word for w in words) == "We are in 1999 okay"
    assert words[0] == Word("We", 1.0, 1.182) and words[-1] == Word("okay", 2.0, 3.0)  # hours are optional
    assert subtitle_suffix(vtt) == ".vtt" and subtitle_suffix("\ufeffWEBVTT\n\n00:01.000 --> 00:02.000\nx\n") == ".vtt"
    assert subtitle_suffix("1\n00:00:00,000 --> 00:00:01,000\nhi\n") == ".srt" and subtitle_suffix("hi -->") == ".txt"
    long = "1\n01:02:03,250 --> 01:02:04,250\nlater\n"
    assert subtitle_words(long) == (Word("later", 3723.25, 3724.25),)


def test_bad_sidecars_fail_their_clip_with_a_reason(tmp_path: Path) -> None:
    empty = touch(tmp_path / "e.txt", b"  \n")
    with pytest.raises(ExtractionError, match="is empty") as info:
        read_sidecar(empty)
    assert info.value.reason == "empty_transcript"
    cues_only = touch(tmp_path / "e.srt", b"1\n00:00:00,000 --> 00:00:01,000\n\n")
    with pytest.raises(ExtractionError) as info:
        read_sidecar(cues_only)
    assert info.value.reason == "empty_transcript"
    latin1 = touch(tmp_path / "l.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(ExtractionError, match="not UTF-8") as info:
        read_sidecar(latin1)
    assert info.value.reason == "bad_transcript"
