"""Group-aware splits: whole groups per split, shares close to the ratio, deterministic, clear refusals."""
from __future__ import annotations

import numpy as np
import pytest

from msa.core.errors import DataError, UsageError
from msa.pipeline.train.data import from_dict
from msa.pipeline.train.splits import assign_groups, group_splits, groups_of


def unsplit(n_groups: int = 10, per_group: int = 12, splits: tuple[str, ...] = ("all",)) -> dict:
    """Rows of ``n_groups`` speakers (``col_speaker``) and actors as video ids, spread over ``splits``."""
    out: dict = {}
    rng = np.random.default_rng(0)
    for k, name in enumerate(splits):
        gs = [g for g in range(n_groups) if g % len(splits) == k]
        n = len(gs) * per_group
        speaker = np.repeat([f"spk{g}" for g in gs], per_group)
        out[name] = {"audio": rng.normal(size=(n, 1, 3)).astype(np.float32), "audio_lengths": np.ones(n),
                     "regression_labels": rng.normal(size=n).astype(np.float32), "col_speaker": speaker,
                     "id": np.array([f"Actor_{s[3:]}$_${i}" for i, s in enumerate(speaker)])}
    return out


def test_assign_groups_keeps_groups_whole_and_follows_the_ratio() -> None:
    groups = np.repeat(np.arange(20), 5)  # 20 groups of 5 rows
    parts = assign_groups(groups, (0.7, 0.15, 0.15), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))  # a partition of the rows
    sets = [set(groups[p].tolist()) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert [len(p) for p in parts] == [70, 15, 15]
    assert [p.tolist() for p in assign_groups(groups, (0.7, 0.15, 0.15), seed=3)] == [p.tolist() for p in parts]
    assert [p.tolist() for p in assign_groups(groups, (0.7, 0.15, 0.15), seed=4)] != [p.tolist() for p in parts]


def test_every_part_gets_a_group_even_when_groups_are_uneven() -> None:
    groups = np.array([0] * 50 + [1] * 2 + [2] * 2)
    parts = assign_groups(groups, (0.8, 0.1, 0.1))
    assert all(len(p) > 0 for p in parts)
    with pytest.raises(DataError, match="2 group.*3 splits"):
        assign_groups(np.array([0, 0, 1]), (0.8, 0.1, 0.1))
    with pytest.raises(UsageError, match="non-negative"):
        assign_groups(groups, (0.8, -0.1, 0.3))


def test_an_unsplit_file_is_split_by_a_label_csv_column() -> None:
    fs, members = group_splits(from_dict(unsplit()), "speaker", (0.8, 0.1, 0.1))
    assert set(fs.splits) == {"train", "valid", "test"}
    assert sum(len(s) for s in fs.splits.values()) == 120
    assert [len(members[k]) for k in ("train", "valid", "test")] == [8, 1, 1]
    for s in fs.splits.values():  # every array of a row moved with it
        assert set(groups_of(s, "speaker")) == set(members[s.name])
        assert all(i.split("$_$")[0] == f"Actor_{g[3:]}" for i, g in zip(s.ids, s.columns["speaker"]))


def test_valid_is_carved_out_of_train_and_existing_splits_are_checked() -> None:
    fs, members = group_splits(from_dict(unsplit(splits=("train", "test"))), "video_id", (0.8, 0.2, 0.0))
    assert set(members) == {"train", "valid", "test"} and len(members["valid"]) == 1
    assert members["test"] == ["Actor_1", "Actor_3", "Actor_5", "Actor_7", "Actor_9"]
    raw = unsplit(splits=("train", "valid"))
    raw["valid"]["col_speaker"][0] = "spk0"  # spk0 is a train speaker
    with pytest.raises(DataError, match="speaker 'spk0' is in both 'train' and 'valid'"):
        group_splits(from_dict(raw), "speaker")


def test_a_missing_column_names_the_ones_there_are() -> None:
    with pytest.raises(DataError, match="no column 'gender'.*video_id, speaker"):
        group_splits(from_dict(unsplit()), "gender")
