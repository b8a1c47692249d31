"""Reading frame metadata (`train.xlsx` or a CSV) into one standard DataFrame.

Output columns, in this order: `path, class_id, video_id, frame_id, caption, row`, then the
other columns of the file under their own names (a subject column, a `split` column...), as
text. `row` is the 1-based spreadsheet row (the header is row 1). `video_id` stays a string.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipmg.data.labels import caption_lookup, load_labels, name_key
from clipmg.errors import DataError
from clipmg.utils import logger

STANDARD_COLUMNS = ("path", "class_id", "video_id", "frame_id", "caption", "row")
REQUIRED_COLUMNS = ("path", "class_id", "video_id", "frame_id")  # the caption may be absent
EXCEL_SUFFIXES = {".xlsx", ".xlsm"}
MAX_PROBLEMS_IN_MESSAGE = 10


@dataclass(frozen=True)
class Columns:
    """Names of the metadata columns in the user's file (iMiGUE names by default)."""

    path: str = "Path"
    class_: str = "Class"
    video: str = "Video ID"
    frame: str = "Frame ID"
    caption: str = "Caption"

    def by_standard_name(self) -> dict[str, str]:
        """{standard column: column name in the user's file}."""
        return {
            "path": self.path,
            "class_id": self.class_,
            "video_id": self.video,
            "frame_id": self.frame,
            "caption": self.caption,
        }


@dataclass
class MetadataProblem:
    """One bad row or cell; `message` is the full text, naming file, row and column."""

    kind: (
        str  # empty_row, empty_cell, not_integer, unknown_class, unknown_caption, caption_mismatch
    )
    row: int
    column: str | None
    message: str


@dataclass
class ParsedMetadata:
    """The usable rows and everything wrong with the others (`check_dataset` reports both)."""

    df: pd.DataFrame
    problems: list[MetadataProblem] = field(default_factory=list)
    rows_read: int = 0


def default_image_root(metadata_path: str | Path) -> Path:
    """Where the relative image paths of a metadata file start.

    iMiGUE keeps `train.xlsx` beside a `training/` folder of class folders; a metadata file
    that itself sits among class folders (e.g. `OUT/training/train.xlsx`) uses its own folder.
    When neither exists, `training/` beside the file is returned so messages name it.
    """
    folder = Path(metadata_path).resolve().parent
    beside = folder / "training"
    if beside.is_dir():
        return beside
    if folder.name == "training" or _has_class_folders(folder):
        return folder
    return beside


def _has_class_folders(folder: Path) -> bool:
    try:
        return any(child.is_dir() and child.name.isdigit() for child in folder.iterdir())
    except OSError:
        return False


def read_metadata(
    path: str | Path,
    labels: Mapping[int, str] | str | Path | None = None,
    columns: Columns = Columns(),
) -> pd.DataFrame:
    """Read and validate metadata; any bad row is a DataError naming file, row and column.

    `labels` (a label-file path or a `load_labels` dict) checks the class ids and captions
    against the label file (without a caption column, captions are the class names).
    Trailing empty rows are ignored; an empty row or cell before the end is an error.
    """
    parsed = parse_metadata(path, labels, columns)
    if parsed.problems:
        raise DataError(format_problems(parsed.problems))
    duplicates = int(parsed.df["path"].duplicated().sum())
    if duplicates:
        logger.warning("%s: %d rows repeat the path of an earlier row", path, duplicates)
    return parsed.df


def format_problems(problems: list[MetadataProblem], limit: int = MAX_PROBLEMS_IN_MESSAGE) -> str:
    lines = [problem.message for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more bad rows or cells")
    return "\n".join(lines)


def parse_metadata(
    path: str | Path,
    labels: Mapping[int, str] | str | Path | None = None,
    columns: Columns = Columns(),
) -> ParsedMetadata:
    """Read metadata, keeping the good rows and listing the problems of the others.

    File-level problems (no file, a missing column, a bad label file) raise DataError:
    nothing can be said about the rows then.
    """
    path = Path(path)
    labels_name, labels = _resolve_labels(labels)
    header, records = _read_table(path)
    names = _match_columns(path, header, columns)
    raw = _raw_frame(header, records)
    problems: list[MetadataProblem] = []
    complete = _find_empty_cells(path, raw, names, problems)
    df = _standardise(raw, names)
    complete = _parse_integers(path, df, names, complete, problems)
    if labels is not None:
        _check_against_labels(path, df, names, labels, labels_name, complete, problems)
    bad_rows = {problem.row for problem in problems}
    df = df[~df["row"].isin(bad_rows)].reset_index(drop=True)
    df = df.astype({"class_id": np.int64, "frame_id": np.int64})
    if "caption" not in names and labels is not None:
        df["caption"] = df["class_id"].map(labels).astype(str)
    problems.sort(key=lambda problem: problem.row)
    return ParsedMetadata(df=df, problems=problems, rows_read=len(records))


def _resolve_labels(labels) -> tuple[str, Mapping[int, str] | None]:
    if labels is None:
        return "", None
    if isinstance(labels, (str, Path)):
        return Path(labels).name, load_labels(labels)
    return "the label file", labels


# --- reading the table ------------------------------------------------------------------


def _read_table(path: Path) -> tuple[list[str], list[tuple]]:
    """Header names and the data records, exactly one record per spreadsheet row."""
    if not path.is_file():
        raise DataError(f"metadata file not found: {path}")
    try:
        rows = (
            _read_xlsx_rows(path) if path.suffix.lower() in EXCEL_SUFFIXES else _read_csv_rows(path)
        )
    except Exception as error:  # openpyxl, zipfile and csv raise many types for a damaged file
        raise DataError(f"cannot read metadata file {path}: {error}") from error
    if not rows:
        raise DataError(f"metadata file {path} is empty")
    header = [_cell_text(cell) for cell in rows[0]]
    return header, _without_trailing_empty(rows[1:])


def _read_xlsx_rows(path: Path) -> list[tuple]:
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        return list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()


def _read_csv_rows(path: Path) -> list[tuple]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [tuple(record) for record in csv.reader(handle)]


def _without_trailing_empty(records: list[tuple]) -> list[tuple]:
    end = len(records)
    while end and all(_cell_text(cell) == "" for cell in records[end - 1]):
        end -= 1
    return records[:end]


def _cell_text(value) -> str:
    """A cell as stripped text; whole numbers without a decimal part (Excel gives 1049.0)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def loose_name(name: str) -> str:
    """A column name as `find_column` compares it: no BOM, spaces collapsed, case folded."""
    return " ".join(str(name).replace("\ufeff", "").split()).casefold()


def find_column(header, wanted: str, source: str | Path | None = None) -> str | None:
    """The one rule for finding a column by name, for metadata and prediction lists alike: the
    header's column named exactly `wanted`; else the one column equal to it once a byte-order mark
    is stripped and case and runs of spaces are ignored (`" path "`, `"PATH"`); None when there
    is none. Several such columns are ambiguous: a DataError naming them."""
    header = [str(name) for name in header]
    if wanted in header:
        return wanted
    loose = [name for name in header if loose_name(name) == loose_name(wanted)]
    if len(loose) > 1:
        where = f"{source}: " if source is not None else ""
        raise DataError(f"{where}columns {', '.join(repr(name) for name in loose)} all match {wanted!r} "
                        "(ignoring case and spaces); rename one, or name the column exactly")
    return loose[0] if loose else None


def _match_columns(path: Path, header: list[str], columns: Columns) -> dict[str, str]:
    """{standard column: header name} (`find_column` for each)."""
    matched: dict[str, str] = {}
    missing = []
    for standard, wanted in columns.by_standard_name().items():
        found = find_column(header, wanted, path)
        if found is not None:
            matched[standard] = found
        elif standard in REQUIRED_COLUMNS:
            missing.append(wanted)
    if missing:
        present = ", ".join(repr(name) for name in header if name) or "none"
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)}; "
            f"the file has the columns {present}"
        )
    return matched


def _raw_frame(header: list[str], records: list[tuple]) -> pd.DataFrame:
    """All cells as text under their header names (unnamed columns dropped), plus `row`."""
    width = len(header)
    cells = [
        [_cell_text(c) for c in record[:width]] + [""] * (width - len(record)) for record in records
    ]
    raw = pd.DataFrame(cells, columns=range(width), dtype=object)
    named = {i: name for i, name in enumerate(header) if name}
    raw = raw[list(named)].rename(columns=named)
    raw = raw.loc[:, ~raw.columns.duplicated()]
    raw["row"] = np.arange(2, len(records) + 2, dtype=np.int64)
    return raw


# --- validating rows --------------------------------------------------------------------


def _find_empty_cells(path, raw, names, problems) -> pd.Series:
    """Report empty rows and empty cells; returns which rows have every used cell filled."""
    used = raw[list(dict.fromkeys(names.values()))]
    filled = used != ""
    any_filled = filled.any(axis=1).to_numpy()
    all_filled = filled.all(axis=1).to_numpy()
    rows = raw["row"].to_numpy()
    for row in rows[~any_filled]:
        problems.append(
            MetadataProblem("empty_row", int(row), None, f"{path} row {row}: empty row")
        )
    for index in np.flatnonzero(any_filled & ~all_filled):
        empty = [repr(name) for name in used.columns[~filled.iloc[index].to_numpy()]]
        columns = ", ".join(empty)
        message = f"{path} row {rows[index]}, column {columns}: empty cell"
        problems.append(MetadataProblem("empty_cell", int(rows[index]), columns, message))
    return pd.Series(all_filled, index=raw.index)


def _standardise(raw: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "path": raw[names["path"]].str.replace("\\", "/", regex=False).astype(str),
            "class_id": raw[names["class_id"]],
            "video_id": raw[names["video_id"]].astype(str),
            "frame_id": raw[names["frame_id"]],
            "caption": raw[names["caption"]].astype(str) if "caption" in names else "",
            "row": raw["row"],
        }
    )
    extra = [c for c in raw.columns if c not in names.values() and c not in STANDARD_COLUMNS]
    return pd.concat([df, raw[extra].astype(str)], axis=1)


def _parse_integers(path, df, names, complete, problems) -> pd.Series:
    """Turn class_id and frame_id into integers in place, reporting cells that are not.

    Returns `complete` narrowed to the rows whose numbers parsed.
    """
    for standard in ("class_id", "frame_id"):
        numbers = pd.to_numeric(df[standard], errors="coerce")
        whole = numbers.notna() & (numbers % 1 == 0)
        for index in np.flatnonzero((complete & ~whole).to_numpy()):
            row, value = int(df["row"].iat[index]), df[standard].iat[index]
            message = f"{path} row {row}, column {names[standard]!r}: {value!r} is not an integer"
            problems.append(MetadataProblem("not_integer", row, names[standard], message))
        df[standard] = numbers.where(whole, -1).astype(np.int64)
        complete = complete & whole
    return complete


def _check_against_labels(path, df, names, labels, labels_name, complete, problems) -> None:
    """Class ids must be in the label file; captions must name the row's class."""
    known = df["class_id"].isin(list(labels)) | ~complete
    id_range = f"ids {min(labels)}..{max(labels)}"
    for index in np.flatnonzero(~known.to_numpy()):
        row, class_id = int(df["row"].iat[index]), int(df["class_id"].iat[index])
        message = (
            f"{path} row {row}, column {names['class_id']!r}: class {class_id} is not in "
            f"{labels_name} ({id_range})"
        )
        problems.append(MetadataProblem("unknown_class", row, names["class_id"], message))
    if "caption" not in names:
        return
    id_by_key = caption_lookup(labels)
    captions = df["caption"]
    caption_ids = captions.map({c: id_by_key.get(name_key(c), -1) for c in captions.unique()})
    checkable = (complete & known).to_numpy()
    column = names["caption"]
    for index in np.flatnonzero(checkable & (caption_ids == -1).to_numpy()):
        row, caption = int(df["row"].iat[index]), captions.iat[index]
        message = f"{path} row {row}, column {column!r}: {caption!r} matches no class name in {labels_name}"
        problems.append(MetadataProblem("unknown_caption", row, column, message))
    mismatch = (
        checkable & (caption_ids != -1).to_numpy() & (caption_ids != df["class_id"]).to_numpy()
    )
    for index in np.flatnonzero(mismatch):
        row, caption = int(df["row"].iat[index]), captions.iat[index]
        message = (
            f"{path} row {row}, column {column!r}: {caption!r} is class {caption_ids.iat[index]} "
            f"in {labels_name} but column {names['class_id']!r} says {df['class_id'].iat[index]}"
        )
        problems.append(MetadataProblem("caption_mismatch", row, column, message))


def find_duplicate_paths(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose path appears more than once (all of them), sorted by path then row."""
    repeated = df[df["path"].duplicated(keep=False)]
    return repeated.sort_values(["path", "row"])
