"""Train/validation splits that keep a clip's near-duplicate frames on one side.

`by="clip"` (the default) puts every frame of a `video_id` on the same side and
stratifies by class: within each class (a clip's class is the class of most of its frames)
clips are shuffled and added to validation while that brings the class's validation frames
closer to `val_fraction` of its frames; every class with at least two clips gets at least
one validation clip and keeps at least one training clip. A class with a single clip
cannot be on both sides without leaking: it is kept in training and reported under
`single_clip_classes` and `classes_missing_from_val`.

`by="subject"` does the same over the values of a subject column (one stratum).
`by="frames"` splits frames at random, stratified by class: the original project's split,
whose validation frames have near-duplicates in training (reported as `leakage`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipmg.data.metadata import Columns, read_metadata
from clipmg.errors import DataError
from clipmg.utils import atomic_write_text

SPLIT_BY = ("clip", "subject", "frames")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_JSON = "split.json"
FRAMES_SPLIT_WARNING = (
    "frames split: {leakage:.1%} of the validation frames come from clips that also have "
    "frames in training; these near-duplicates inflate validation accuracy. Use by='clip' "
    "(or 'subject') for numbers that say how the model does on unseen clips."
)


@dataclass
class Split:
    """Positions (0-based, into the DataFrame that was split) of each side, and a report."""

    train_index: np.ndarray
    val_index: np.ndarray
    report: dict
    #: frames kept apart from training and from choosing the checkpoint: scored once at the end
    test_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def split_dataset(
    df: pd.DataFrame,
    by: str = "clip",
    val_fraction: float = 0.2,
    seed: int = 42,
    subject_column: str | None = None,
    test_fraction: float = 0.0,
) -> Split:
    """Split a standard metadata DataFrame (see the module docstring for the methods).

    With `test_fraction`, that share of the frames (whole clips or subjects, as `by` says) is
    set apart first as a test part, then `val_fraction` of all frames is taken from the rest."""
    if test_fraction:
        return _split_with_test(df, by, val_fraction, seed, subject_column, test_fraction)
    return _split_two_ways(df, by, val_fraction, seed, subject_column)


def _split_two_ways(df: pd.DataFrame, by: str, val_fraction: float, seed: int, subject_column: str | None,
                    force: bool = True) -> Split:
    """Training and one other part (validation; with `force=False` a test part that may be empty)."""
    if by not in SPLIT_BY:
        raise DataError(f"unknown split method {by!r}; use one of {', '.join(SPLIT_BY)}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if len(df) < 2:
        raise DataError(f"cannot split {len(df)} row(s) into training and validation")
    groups, strata = _groups_and_strata(df, by, subject_column)
    rng = np.random.default_rng(seed)
    val_groups = _choose_val_groups(groups, strata, val_fraction, rng, force=force)
    is_val = pd.Series(groups).isin(val_groups).to_numpy()
    split = Split(
        train_index=np.flatnonzero(~is_val),
        val_index=np.flatnonzero(is_val),
        report={},
    )
    split.report = split_report(df, split, by=by, seed=seed, val_fraction=val_fraction)
    if by == "subject":
        split.report.update(_subject_counts(df, split, subject_column))
    return split


def _split_with_test(df: pd.DataFrame, by: str, val_fraction: float, seed: int, subject_column: str | None,
                     test_fraction: float) -> Split:
    if not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataError(f"test_fraction must be between 0 and 1 and leave frames for training beside "
                        f"val_fraction {val_fraction}, got {test_fraction}")
    outer = _split_two_ways(df, by, test_fraction, seed, subject_column, force=False)
    rest = df.iloc[outer.train_index]
    inner = split_dataset(rest, by, val_fraction / (1.0 - test_fraction), seed, subject_column)
    split = Split(train_index=outer.train_index[inner.train_index], val_index=outer.train_index[inner.val_index],
                  report={}, test_index=outer.val_index)
    split.report = {**inner.report, **split_report(df, split, by=by, seed=seed, val_fraction=val_fraction),
                    **_test_counts(df, split, subject_column if by == "subject" else None),
                    "test_fraction": float(test_fraction)}
    return split


def _test_counts(df: pd.DataFrame, split: Split, subject_column: str | None) -> dict:
    test = df.iloc[split.test_index]
    seen = df.iloc[np.concatenate([split.train_index, split.val_index])]
    counts = {"rows_test": len(test), "clips_test": int(test["video_id"].nunique()),
              "test_leakage": round(float(test["video_id"].isin(set(seen["video_id"])).mean()), 4) if len(test) else 0.0,
              "class_counts_test": _counts(test)}
    if subject_column:
        counts["subjects_test"] = int(test[subject_column].astype(str).nunique())
        counts["subjects_test_also_seen"] = len(set(test[subject_column].astype(str))
                                                & set(seen[subject_column].astype(str)))
    return counts


def _groups_and_strata(df: pd.DataFrame, by: str, subject_column: str | None):
    """Per row: the unit that moves as a whole, and that unit's stratum."""
    if by == "frames":
        return np.arange(len(df)), df["class_id"].to_numpy()
    if by == "clip":
        groups = df["video_id"].astype(str).to_numpy()
        return groups, _majority_class(df).reindex(groups).to_numpy()
    if subject_column is None or subject_column not in df.columns:
        wanted = (
            "a subject column (subject_column=...)"
            if subject_column is None
            else repr(subject_column)
        )
        raise DataError(
            f"a subject split needs {wanted}; the metadata has the columns "
            f"{', '.join(repr(c) for c in df.columns if c != 'row')}"
        )
    groups = df[subject_column].astype(str).to_numpy()
    return groups, np.zeros(len(df), dtype=np.int64)


def _majority_class(df: pd.DataFrame) -> pd.Series:
    """Clip -> the class of most of its frames (the smaller id on a tie)."""
    pairs = df.groupby(["video_id", "class_id"]).size().rename("frames").reset_index()
    pairs = pairs.sort_values(["frames", "class_id"], ascending=[False, True])
    return pairs.drop_duplicates("video_id").set_index("video_id")["class_id"]


def _choose_val_groups(groups: np.ndarray, strata: np.ndarray, val_fraction: float, rng, force: bool = True) -> list:
    units = pd.DataFrame({"group": groups, "stratum": strata}).groupby("group", sort=True)
    sizes = units.size()
    stratum_of = units["stratum"].first()
    chosen: list = []
    for stratum in sorted(stratum_of.unique()):
        members = stratum_of.index[stratum_of.to_numpy() == stratum].to_numpy()
        member_sizes = sizes.loc[members].to_numpy()
        chosen.extend(_choose_in_stratum(members, member_sizes, val_fraction, rng, force))
    return chosen


def _choose_in_stratum(members, sizes, val_fraction, rng, force: bool = True) -> list:
    """Greedy: shuffled groups join validation while that moves its frames toward the target; with
    `force`, a stratum gives at least one group (validation), else possibly none (a test part
    takes nothing from a class too small to share)."""
    if len(members) < 2:
        return []  # a lone group cannot be on both sides: it stays in training
    target = val_fraction * sizes.sum()
    order = rng.permutation(len(members))
    picked, frames = [], 0
    for i in order:
        if abs(frames + sizes[i] - target) < abs(frames - target):
            picked.append(i)
            frames += sizes[i]
    if not picked and not force:
        return []
    if not picked:  # every group overshoots: take the one closest to the target
        picked = [int(order[np.argmin(np.abs(sizes[order] - target))])]
    if len(picked) == len(members):  # keep at least one group for training
        picked.remove(min(picked, key=lambda i: sizes[i]))
    return list(members[picked])


def split_report(df: pd.DataFrame, split: Split, by: str, seed: int, val_fraction: float) -> dict:
    train, val = df.iloc[split.train_index], df.iloc[split.val_index]
    clips_train, clips_val = set(train["video_id"]), set(val["video_id"])
    leaked = val["video_id"].isin(clips_train)
    leakage = float(leaked.mean()) if len(val) else 0.0
    clips_per_class = df.groupby("class_id")["video_id"].nunique()
    all_classes, val_classes = set(df["class_id"]), set(val["class_id"])
    report = {
        "by": by,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "val_fraction_actual": round(len(val) / len(df), 4),
        "rows_train": len(train),
        "rows_val": len(val),
        "clips_train": len(clips_train),
        "clips_val": len(clips_val),
        "clips_on_both_sides": len(clips_train & clips_val),
        "classes_train": int(train["class_id"].nunique()),
        "classes_val": len(val_classes),
        "classes_missing_from_val": sorted(int(c) for c in all_classes - val_classes),
        "single_clip_classes": sorted(int(c) for c in clips_per_class.index[clips_per_class == 1]),
        "leakage": round(leakage, 4),
        "class_counts_train": _counts(train),
        "class_counts_val": _counts(val),
        "warning": FRAMES_SPLIT_WARNING.format(leakage=leakage) if by == "frames" else None,
    }
    return report


def _counts(df: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in df["class_id"].value_counts().sort_index().items()}


def _subject_counts(df: pd.DataFrame, split: Split, subject_column: str) -> dict:
    subjects = df[subject_column].astype(str)
    train, val = set(subjects.iloc[split.train_index]), set(subjects.iloc[split.val_index])
    return {
        "subject_column": subject_column,
        "subjects_train": len(train),
        "subjects_val": len(val),
        "subjects_on_both_sides": len(train & val),
    }


# --- files --------------------------------------------------------------------------------


def split_column(split: Split, length: int) -> np.ndarray:
    sides = np.full(length, "", dtype=object)
    sides[split.train_index] = "train"
    sides[split.val_index] = "val"
    sides[split.test_index] = "test"
    return sides


def to_original_columns(df: pd.DataFrame, columns: Columns = Columns()) -> pd.DataFrame:
    """A standard DataFrame back under the metadata file's column names (without `row`)."""
    names = {standard: name for standard, name in columns.by_standard_name().items()}
    return df.drop(columns=["row"], errors="ignore").rename(columns=names)


def write_split(
    split: Split,
    df: pd.DataFrame,
    out_csv: str | os.PathLike,
    columns: Columns = Columns(),
) -> tuple[Path, Path]:
    """Write the metadata with a `split` column (train/val) and `split.json` beside it.

    The CSV has the metadata file's columns (`Path, Class, Video ID, Frame ID, Caption` and
    any others), so it can be read like the original; its paths stay relative to the same
    image root. Returns the paths of the CSV and the JSON report.
    """
    out_csv = Path(out_csv)
    if len(split.train_index) + len(split.val_index) + len(split.test_index) != len(df):
        raise DataError("the split does not cover this DataFrame (was it made from another one?)")
    table = to_original_columns(df, columns)
    table["split"] = split_column(split, len(df))
    atomic_write_text(out_csv, table.to_csv(index=False))
    out_json = out_csv.parent / SPLIT_JSON
    report = {**split.report, "csv": out_csv.name}
    atomic_write_text(out_json, json.dumps(report, indent=2) + "\n")
    return out_csv, out_json


def read_split(
    path: str | os.PathLike,
    labels=None,
    columns: Columns = Columns(),
) -> pd.DataFrame:
    """Read a CSV written by `write_split`: the standard DataFrame plus its `split` column."""
    df = read_metadata(path, labels, columns)
    if "split" not in df.columns:
        raise DataError(f"{path}: no 'split' column; is this a file written by 'clipmg split'?")
    sides = df["split"].str.strip().str.lower()
    bad = ~sides.isin(SPLIT_NAMES)
    if bad.any():
        row, value = df["row"][bad].iloc[0], df["split"][bad].iloc[0]
        raise DataError(f"{path} row {row}, column 'split': {value!r} is not one of {', '.join(SPLIT_NAMES)}")
    df["split"] = sides
    return df


def subset(
    df_or_split_csv: pd.DataFrame | str | os.PathLike,
    which: str,
    split: Split | None = None,
) -> pd.DataFrame:
    """The `which` ("train", "val" or "test") rows of a split CSV, of a DataFrame with a `split`
    column, or of a DataFrame and the Split made from it; positions renumbered from 0."""
    if which not in SPLIT_NAMES:
        raise DataError(f"which must be one of {', '.join(SPLIT_NAMES)}, got {which!r}")
    if isinstance(df_or_split_csv, (str, os.PathLike)):
        df = read_split(df_or_split_csv)
    else:
        df = df_or_split_csv
    if split is not None:
        positions = {"train": split.train_index, "val": split.val_index, "test": split.test_index}[which]
        return df.iloc[positions].reset_index(drop=True)
    if "split" not in df.columns:
        raise DataError("this metadata has no 'split' column; pass the Split, or a split CSV")
    return df[df["split"] == which].reset_index(drop=True)


def select_frames(
    metadata: str | os.PathLike,
    labels=None,
    split: str | os.PathLike | None = None,
    subset: str = "val",
    columns: Columns | None = None,
) -> tuple[pd.DataFrame, Path]:
    """The frames of `metadata`, or of `split`'s `subset` ("train", "val", "test" or "all"): what
    evaluate, embed and prompt experiments run on. Returns (frames, the file they came from)."""
    columns = columns or Columns()
    source = Path(split) if split is not None else Path(metadata)
    if split is None:
        frames = read_metadata(source, labels, columns)
    else:
        frames = read_split(source, labels, columns)
        if subset != "all":
            known = sorted(set(frames["split"]))
            frames = frames[frames["split"] == subset]
            if frames.empty:
                raise DataError(
                    f"{source} has no {subset!r} frames (its split column holds "
                    f"{', '.join(known) or 'nothing'})"
                )
    if frames.empty:
        raise DataError(f"{source} has no frames")
    return frames.reset_index(drop=True), source
