"""Train/validation splits: clip grouping, leakage, single-clip classes, files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clipmg.data import read_split, split_dataset, subset, write_split
from clipmg.errors import DataError


def demo_like_frame(clips_per_class=(12, 8, 5, 3, 2, 1), frames=(1, 6), seed=0) -> pd.DataFrame:
    """A standard metadata DataFrame: several frames per clip, imbalanced classes."""
    rng = np.random.default_rng(seed)
    rows, clip_id = [], 1000
    for class_id, clips in enumerate(clips_per_class, start=1):
        for _ in range(clips):
            for frame in range(int(rng.integers(frames[0], frames[1] + 1))):
                rows.append(
                    (
                        f"{class_id}/{clip_id}.{frame}.jpg",
                        class_id,
                        str(clip_id),
                        frame,
                        f"class {class_id}",
                    )
                )
            clip_id += 1
    df = pd.DataFrame(rows, columns=["path", "class_id", "video_id", "frame_id", "caption"])
    df["row"] = np.arange(2, len(df) + 2)
    df["subject"] = [f"s{int(v) % 7}" for v in df["video_id"]]
    return df


def sides(df, split):
    return set(df["video_id"].iloc[split.train_index]), set(df["video_id"].iloc[split.val_index])


def test_clip_split_has_no_leakage():
    df = demo_like_frame()
    split = split_dataset(df, by="clip", val_fraction=0.25, seed=3)
    train, val = sides(df, split)
    assert not train & val
    assert split.report["leakage"] == 0.0 and split.report["clips_on_both_sides"] == 0
    assert sorted(np.concatenate([split.train_index, split.val_index]).tolist()) == list(
        range(len(df))
    )
    assert split.report["rows_train"] + split.report["rows_val"] == len(df)
    assert 0.1 < split.report["val_fraction_actual"] < 0.4
    assert split.report["warning"] is None


def test_clip_split_stratifies_every_class_with_two_clips():
    df = demo_like_frame()
    split = split_dataset(df, by="clip", val_fraction=0.2, seed=0)
    val_classes = set(df["class_id"].iloc[split.val_index])
    train_classes = set(df["class_id"].iloc[split.train_index])
    assert val_classes == {1, 2, 3, 4, 5}
    assert train_classes == {1, 2, 3, 4, 5, 6}


def test_single_clip_class_stays_in_training_and_is_reported():
    df = demo_like_frame()
    report = split_dataset(df, by="clip").report
    assert report["single_clip_classes"] == [6]
    assert report["classes_missing_from_val"] == [6]
    assert report["classes_train"] == 6 and report["classes_val"] == 5
    assert "6" in report["class_counts_train"] and "6" not in report["class_counts_val"]


def test_clip_with_frames_of_two_classes_stays_on_one_side():
    df = demo_like_frame()
    mixed = df["video_id"] == df["video_id"].iloc[0]
    df.loc[mixed & (df["frame_id"] == 0), "class_id"] = 2
    for seed in range(5):
        train, val = sides(df, split_dataset(df, seed=seed))
        assert not train & val


def test_frames_split_leaks_on_near_duplicate_frames():
    df = demo_like_frame(frames=(4, 8))
    split = split_dataset(df, by="frames", val_fraction=0.2, seed=0)
    assert split.report["leakage"] > 0.8
    assert "frames split" in split.report["warning"] and "inflate" in split.report["warning"]
    assert split.report["classes_missing_from_val"] == []  # classes with 2+ frames all appear


def test_subject_split_keeps_subjects_apart_and_needs_the_column():
    df = demo_like_frame()
    split = split_dataset(df, by="subject", subject_column="subject", seed=1)
    subjects = df["subject"]
    assert not set(subjects.iloc[split.train_index]) & set(subjects.iloc[split.val_index])
    assert split.report["subjects_on_both_sides"] == 0 and split.report["leakage"] == 0.0
    with pytest.raises(DataError, match="'speaker'.*'path', 'class_id', 'video_id'.*'subject'"):
        split_dataset(df, by="subject", subject_column="speaker")
    with pytest.raises(DataError, match="subject column"):
        split_dataset(df, by="subject")


def test_split_is_deterministic_given_the_seed():
    df = demo_like_frame()
    for by in ("clip", "frames"):
        a, b = split_dataset(df, by=by, seed=7), split_dataset(df, by=by, seed=7)
        assert np.array_equal(a.val_index, b.val_index) and a.report == b.report
    assert not np.array_equal(
        split_dataset(df, seed=1).val_index, split_dataset(df, seed=2).val_index
    )


def test_bad_arguments():
    df = demo_like_frame()
    with pytest.raises(DataError, match="unknown split method"):
        split_dataset(df, by="video")
    with pytest.raises(DataError, match="val_fraction"):
        split_dataset(df, val_fraction=1.5)


def test_write_and_read_split(tmp_path):
    df = demo_like_frame()
    split = split_dataset(df)
    csv_path, json_path = write_split(split, df, tmp_path / "out" / "split.csv")
    assert json_path == tmp_path / "out" / "split.json"
    report = json.loads(json_path.read_text())
    for key in (
        "rows_train",
        "rows_val",
        "clips_train",
        "clips_val",
        "classes_train",
        "classes_val",
        "leakage",
        "by",
        "seed",
        "val_fraction",
        "single_clip_classes",
        "classes_missing_from_val",
        "warning",
    ):
        assert key in report
    raw = pd.read_csv(csv_path)
    assert list(raw.columns) == [
        "Path",
        "Class",
        "Video ID",
        "Frame ID",
        "Caption",
        "subject",
        "split",
    ]
    assert (raw["split"] == "val").sum() == report["rows_val"]
    back = read_split(csv_path)
    assert back["path"].tolist() == df["path"].tolist()
    assert back["video_id"].tolist() == df["video_id"].tolist()
    val = subset(csv_path, "val")
    assert len(val) == report["rows_val"] and val.index.tolist() == list(range(len(val)))
    assert (
        subset(df, "train", split)["path"].tolist() == df["path"].iloc[split.train_index].tolist()
    )


def test_read_split_rejects_bad_split_values(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        "Path,Class,Video ID,Frame ID,Caption,split\n1/1.0.jpg,1,1,0,a,train\n1/2.0.jpg,1,2,0,a,holdout\n"
    )
    with pytest.raises(DataError, match="s.csv row 3, column 'split': 'holdout'"):
        read_split(path)
    with pytest.raises(DataError, match="no 'split' column"):
        subset(demo_like_frame(), "val")


@pytest.mark.parametrize("by,column", [("clip", None), ("subject", "subject")])
def test_a_test_part_is_set_apart_from_training_and_validation(by, column):
    df = demo_like_frame(clips_per_class=(12, 10, 8, 8, 6, 6))
    split = split_dataset(df, by=by, subject_column=column, val_fraction=0.2, test_fraction=0.2, seed=3)
    parts = [set(split.train_index), set(split.val_index), set(split.test_index)]
    assert all(parts) and sum(map(len, parts)) == len(df) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    unit = df["video_id"] if by == "clip" else df["subject"]
    seen = set(unit.iloc[np.r_[split.train_index, split.val_index]])
    assert not seen & set(unit.iloc[split.test_index])
    assert split.report["rows_test"] == len(split.test_index) and split.report["test_leakage"] == 0.0


def test_a_split_with_a_test_part_round_trips_through_its_csv(tmp_path):
    df = demo_like_frame(clips_per_class=(12, 10, 8, 8, 6, 6))
    split = split_dataset(df, test_fraction=0.2, seed=0)
    csv, _ = write_split(split, df, tmp_path / "split.csv")
    back = read_split(csv)
    assert (back["split"] == "test").sum() == len(split.test_index)
    assert len(subset(back, "train")) == len(split.train_index)


def test_a_test_part_that_leaves_nothing_to_train_on_is_refused():
    with pytest.raises(DataError, match="test_fraction"):
        split_dataset(demo_like_frame(), val_fraction=0.5, test_fraction=0.5)
