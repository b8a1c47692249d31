"""`clipmg check`: is a metadata file + label file + image folder usable for training?

Collects every problem it can find instead of stopping at the first, and returns a
CheckReport; it never prints.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from clipmg.data.images import verify_image
from clipmg.data.labels import load_labels
from clipmg.data.metadata import Columns, default_image_root, find_duplicate_paths, parse_metadata
from clipmg.errors import DataError
from clipmg.utils import progress

EXAMPLES_IN_TEXT = 10


@dataclass
class CheckReport:
    metadata_path: str
    labels_path: str
    image_root: str = ""
    rows_read: int = 0  # data rows in the file
    rows: int = 0  # rows without problems
    label_classes: int = 0
    classes: int = 0  # classes with at least one usable row
    clips: int = 0
    frames_per_clip: dict = field(default_factory=dict)  # min, median, max
    class_counts: dict = field(default_factory=dict)  # id -> frames
    class_clips: dict = field(default_factory=dict)  # id -> clips
    class_names: dict = field(default_factory=dict)  # id -> cleaned name
    imbalance_ratio: float | None = None  # frames of the largest class / of the smallest
    classes_without_rows: list = field(default_factory=list)
    single_clip_classes: list = field(default_factory=list)
    mixed_class_clips: list = field(default_factory=list)  # clips whose frames have 2+ classes
    bad_rows: list = field(default_factory=list)  # messages naming file, row and column
    bad_row_kinds: dict = field(default_factory=dict)  # kind -> count
    duplicate_paths: list = field(default_factory=list)
    missing_images: list = field(default_factory=list)
    unreadable_images: list = field(default_factory=list)  # [path, reason]
    images_checked: int = 0
    images_decoded: bool = False
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when training can use the data as it is (warnings allowed, errors not)."""
        return not self.errors

    def to_dict(self, limit: int | None = 100) -> dict:
        """JSON-able; long lists are cut to `limit` items (None: everything), with counts."""
        data = asdict(self)
        for key in (
            "bad_rows",
            "duplicate_paths",
            "missing_images",
            "unreadable_images",
            "mixed_class_clips",
        ):
            data[f"{key}_count"] = len(data[key])
            if limit is not None:
                data[key] = data[key][:limit]
        data["ok"] = self.ok
        return data

    def to_text(self) -> str:
        return "\n".join(_report_lines(self))


def check_dataset(
    metadata_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    columns: Columns = Columns(),
    skip_bad_images: bool = False,
    verify_images: bool = True,
    workers: int | None = None,
) -> CheckReport:
    """Check metadata, labels and images and report everything found.

    `verify_images` decodes every image that exists (JPEGs at 1/8 scale: every byte is still
    read, so truncated files are caught); without it only existence is checked, which takes
    seconds for 60k files. With `skip_bad_images`, missing and unreadable images are
    warnings (training will skip them) instead of errors.
    """
    start = time.perf_counter()
    report = CheckReport(metadata_path=str(metadata_path), labels_path=str(labels_path))
    labels = _check_labels(report, labels_path)
    try:
        parsed = parse_metadata(metadata_path, labels, columns)
    except DataError as error:
        report.errors.append(str(error))
        report.seconds["total"] = round(time.perf_counter() - start, 3)
        return report
    report.seconds["metadata"] = round(time.perf_counter() - start, 3)
    _add_row_problems(report, parsed)
    df = parsed.df
    _add_statistics(report, df, labels)
    _add_duplicates(report, df)
    root = Path(image_root) if image_root is not None else default_image_root(metadata_path)
    report.image_root = str(root)
    images_start = time.perf_counter()
    _check_images(report, df, root, verify_images, workers)
    _judge_images(report, skip_bad_images, len(df["path"].unique()))
    report.seconds["images"] = round(time.perf_counter() - images_start, 3)
    report.seconds["total"] = round(time.perf_counter() - start, 3)
    return report


def _check_labels(report: CheckReport, labels_path) -> dict | None:
    try:
        labels = load_labels(labels_path)
    except DataError as error:
        report.errors.append(str(error))
        return None
    report.label_classes = len(labels)
    report.class_names = {int(k): v for k, v in labels.items()}
    return labels


def _add_row_problems(report: CheckReport, parsed) -> None:
    report.rows_read = parsed.rows_read
    report.rows = len(parsed.df)
    report.bad_rows = [problem.message for problem in parsed.problems]
    kinds: dict[str, int] = defaultdict(int)
    for problem in parsed.problems:
        kinds[problem.kind] += 1
    report.bad_row_kinds = dict(kinds)
    if parsed.problems:
        bad = len({problem.row for problem in parsed.problems})
        summary = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in kinds.items())
        report.errors.append(f"{bad} bad row(s) in the metadata ({summary}); see bad_rows")
    if report.rows == 0:
        report.errors.append("no usable rows in the metadata")


def _add_statistics(report: CheckReport, df: pd.DataFrame, labels: dict | None) -> None:
    if df.empty:
        return
    counts = df["class_id"].value_counts().sort_index()
    clips = df.groupby("class_id")["video_id"].nunique()
    frames_per_clip = df.groupby("video_id").size()
    report.classes = len(counts)
    report.clips = int(df["video_id"].nunique())
    report.frames_per_clip = {
        "min": int(frames_per_clip.min()),
        "median": float(frames_per_clip.median()),
        "max": int(frames_per_clip.max()),
    }
    report.class_counts = {int(k): int(v) for k, v in counts.items()}
    report.class_clips = {int(k): int(v) for k, v in clips.items()}
    report.imbalance_ratio = round(float(counts.max() / counts.min()), 2)
    report.single_clip_classes = sorted(int(c) for c in clips.index[clips == 1])
    classes_per_clip = df.groupby("video_id")["class_id"].nunique()
    report.mixed_class_clips = sorted(str(v) for v in classes_per_clip.index[classes_per_clip > 1])
    if labels is not None:
        report.classes_without_rows = sorted(set(labels) - set(report.class_counts))
    _add_statistics_warnings(report)


def _add_statistics_warnings(report: CheckReport) -> None:
    if report.classes_without_rows:
        report.warnings.append(
            f"classes of the label file with no rows: {report.classes_without_rows}"
        )
    if report.single_clip_classes:
        report.warnings.append(
            f"classes with a single clip (a clip split keeps them in training only): "
            f"{report.single_clip_classes}"
        )
    if report.mixed_class_clips:
        report.warnings.append(
            f"{len(report.mixed_class_clips)} clip(s) have frames of more than one class "
            f"(e.g. Video ID {report.mixed_class_clips[0]}); a clip split keeps each on one side"
        )


def _add_duplicates(report: CheckReport, df: pd.DataFrame) -> None:
    repeated = find_duplicate_paths(df)
    if repeated.empty:
        return
    report.duplicate_paths = sorted(repeated["path"].unique().tolist())
    conflicting = repeated.groupby("path")["class_id"].nunique()
    conflicting = conflicting[conflicting > 1]
    for path in conflicting.index[:EXAMPLES_IN_TEXT]:
        rows = repeated.loc[repeated["path"] == path, "row"].tolist()
        report.errors.append(f"{path} is listed with different classes (rows {rows})")
    if len(conflicting) > EXAMPLES_IN_TEXT:
        report.errors.append(
            f"... {len(conflicting) - EXAMPLES_IN_TEXT} more paths with different classes"
        )
    report.warnings.append(
        f"{len(report.duplicate_paths)} path(s) appear in more than one row "
        f"(e.g. {report.duplicate_paths[0]})"
    )


def _check_images(report: CheckReport, df: pd.DataFrame, root: Path, decode: bool, workers) -> None:
    paths = df["path"].unique().tolist()
    if not root.is_dir():
        report.errors.append(f"image folder not found: {root} (pass the image root)")
        report.missing_images = paths
        return
    existing = _existing_files(root, paths)
    report.missing_images = [p for p in paths if p not in existing]
    present = [p for p in paths if p in existing]
    report.images_checked = len(present)
    report.images_decoded = decode
    if decode and present:
        report.unreadable_images = _unreadable(root, present, workers)


def _existing_files(root: Path, paths: list[str]) -> set[str]:
    """The paths that exist, listing each folder once instead of a stat per file."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_folder[os.path.dirname(path)].append(path)
    existing = set()
    for folder, members in by_folder.items():
        try:
            with os.scandir(os.path.join(root, folder)) as entries:
                files = {entry.name for entry in entries if entry.is_file()}
        except OSError:
            continue
        existing.update(p for p in members if os.path.basename(p) in files)
    return existing


def _unreadable(root: Path, paths: list[str], workers: int | None) -> list[list[str]]:
    # Pillow releases the GIL while decoding, so threads use every core.
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = pool.map(lambda p: verify_image(os.path.join(root, p)), paths, chunksize=64)
        results = list(progress(reasons, total=len(paths), desc="checking images", unit="img"))
    return [[path, reason] for path, reason in zip(paths, results) if reason is not None]


def _judge_images(report: CheckReport, skip_bad_images: bool, unique_paths: int) -> None:
    missing, unreadable = len(report.missing_images), len(report.unreadable_images)
    if not (missing or unreadable):
        return
    message = f"{missing} of {unique_paths} images missing, {unreadable} unreadable"
    if missing:
        message += f" (e.g. {Path(report.image_root) / report.missing_images[0]})"
    elif unreadable:
        message += f" (e.g. {report.unreadable_images[0][1]})"
    if skip_bad_images and missing + unreadable < unique_paths:
        report.warnings.append(message + "; they will be skipped")
    elif not any(error.startswith("image folder not found") for error in report.errors):
        report.errors.append(message)


# --- text ---------------------------------------------------------------------------------


def _report_lines(report: CheckReport) -> list[str]:
    lines = [
        f"metadata     {report.metadata_path}",
        f"labels       {report.labels_path} ({report.label_classes} classes)",
        f"images       {report.image_root or '-'}",
    ]
    if report.rows_read:
        lines += _summary_lines(report)
    lines += _list_lines("bad rows", report.bad_rows)
    lines += _list_lines("duplicate paths", report.duplicate_paths)
    lines += _list_lines("missing images", report.missing_images)
    lines += _list_lines(
        "unreadable images", [f"{p}: {reason}" for p, reason in report.unreadable_images]
    )
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"error: {e}" for e in report.errors]
    verdict = "OK" if report.ok else f"NOT OK ({len(report.errors)} error(s))"
    lines.append(f"result       {verdict}   [{report.seconds.get('total', 0):.1f} s]")
    return lines


def _summary_lines(report: CheckReport) -> list[str]:
    fpc = report.frames_per_clip
    lines = [
        f"rows         {report.rows:,} usable of {report.rows_read:,}",
        f"classes      {report.classes} with rows, {report.label_classes} in the label file",
        f"clips        {report.clips:,}",
    ]
    if fpc:
        lines.append(f"frames/clip  min {fpc['min']}, median {fpc['median']:g}, max {fpc['max']}")
    if report.class_counts:
        largest = max(report.class_counts, key=report.class_counts.get)
        smallest = min(report.class_counts, key=report.class_counts.get)
        lines.append(
            f"imbalance    {report.imbalance_ratio:g} (class {largest}: "
            f"{report.class_counts[largest]:,} frames, class {smallest}: {report.class_counts[smallest]:,})"
        )
        lines.append("class  frames  clips  name")
        for class_id, frames in report.class_counts.items():
            name = report.class_names.get(class_id, "")
            lines.append(
                f"{class_id:>5}  {frames:>6}  {report.class_clips.get(class_id, 0):>5}  {name}"
            )
    return lines


def _list_lines(title: str, items: list) -> list[str]:
    if not items:
        return []
    lines = [f"{title}: {len(items):,}"]
    lines += [f"  {item}" for item in items[:EXAMPLES_IN_TEXT]]
    if len(items) > EXAMPLES_IN_TEXT:
        lines.append(f"  ... and {len(items) - EXAMPLES_IN_TEXT:,} more")
    return lines
