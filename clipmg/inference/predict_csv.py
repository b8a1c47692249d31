"""Classify the images listed in a CSV (`test.py`, `clipmg predict`), streamed.

The input CSV is read and the predictions written in chunks: memory does not grow with the
number of rows (except for one row of C logits per labelled image, kept for the metrics). Every
label is checked before any image is decoded, so a bad label fails fast, naming its row. With a
clip column, `clip_predictions.csv` (one row per clip) is written beside the predictions; the
first pass also plans the clips (`clipmg.inference.clips`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.data.labels import name_key
from clipmg.errors import DataError
from clipmg.inference.adapt import adapt_classifier, sample_indices
from clipmg.inference.batches import DEFAULT_BATCH_SIZE, default_workers, image_roots
from clipmg.inference.classifier import Classifier, id_range
from clipmg.inference.clips import ClipCollector, ClipPlanner, clip_predictions_path
from clipmg.inference.ensemble import Ensemble, load_classifier
from clipmg.inference.gallery import MisclassifiedGallery
from clipmg.inference.scoring import (
    STATUS_COLUMN,
    check_inference_options,
    prediction_frame,
    score_images,
)
from clipmg.metrics import write_report
from clipmg.outputs import check_output_file, output_errors, streamed_output
from clipmg.utils import atomic_output, logger, progress

DEFAULT_TOPK = 5
CHUNK_ROWS = 16384  # rows read, classified and written at a time
MAX_LISTED_SKIPS = 100  # skipped rows kept in the summary (all are marked in the output)
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
PREDICTION_COLUMNS = ("pred_class", "pred_name", "score")


@dataclass
class LabelColumns:
    """Which columns of the input hold the truth: a class id column, a caption column, clips."""

    class_: str | None
    caption: str | None
    video: str | None

    @property
    def any(self) -> bool:
        return self.class_ is not None or self.caption is not None


class Truth:
    """Maps a chunk of input rows to class indices (-1: no label) and to clip codes."""

    def __init__(self, classifier: Classifier, columns: LabelColumns, source: str):
        self.columns, self.source = columns, source
        self.index_of = {cid: i for i, cid in enumerate(classifier.class_ids)}
        lookup = cdata.caption_lookup(dict(zip(classifier.class_ids, classifier.class_names)))
        self.index_of_name = {key: self.index_of[cid] for key, cid in lookup.items()}
        self.class_names = classifier.class_names
        self.class_ids = classifier.class_ids
        self.clip_codes: dict[str, int] = {}
        self.rows_alone = 0

    def targets(self, chunk: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Class index per row, -1 where the row has no label; a label the checkpoint does not
        know raises DataError naming the rows."""
        targets = np.full(len(chunk), -1, dtype=np.int64)
        problems: list[str] = []
        todo = np.ones(len(chunk), dtype=bool)
        if self.columns.class_ is not None:
            text = chunk[self.columns.class_].astype(str).str.strip()
            has = (text != "").to_numpy()
            numbers = pd.to_numeric(text.where(has), errors="coerce")
            mapped = numbers.map({float(cid): i for cid, i in self.index_of.items()}).fillna(-1)
            mapped = mapped.to_numpy(dtype=np.int64)
            for i in np.flatnonzero(has & (mapped < 0))[:10]:
                problems.append(f"{self.source} row {rows[i]}, column {self.columns.class_!r}: "
                                f"{text.iat[i]!r} is not one of the checkpoint's class ids "
                                f"({id_range(self.class_ids)})")
            targets[has] = mapped[has]
            todo = ~has
        if self.columns.caption is not None and todo.any():
            captions = chunk[self.columns.caption].astype(str).str.strip().to_numpy()[todo]
            codes, uniques = pd.factorize(captions)
            index = np.array([self.index_of_name.get(name_key(c), -1) if c else -2 for c in uniques] or [-2],
                             dtype=np.int64)[codes]
            for i in np.flatnonzero(index == -1)[:10]:
                problems.append(f"{self.source} row {rows[todo][i]}, column {self.columns.caption!r}: "
                                f"{captions[i]!r} is not a class name of the checkpoint")
            targets[todo] = np.maximum(index, -1)
        if problems:
            known = "" if self.columns.class_ is not None else (
                "; its classes are " + ", ".join(self.class_names))
            raise DataError("labels the checkpoint does not know:\n" + "\n".join(problems[:10]) + known
                            + "\n(empty label cells are allowed: those rows are predicted but not scored)")
        return targets

    def clips(self, chunk: pd.DataFrame) -> np.ndarray:
        """A code per row for its clip, the same across chunks (rows without a clip id are
        clips of their own)."""
        videos = chunk[self.columns.video].astype(str).str.strip().to_numpy()
        codes, uniques = pd.factorize(videos)
        lookup = np.array([self.clip_codes.setdefault(v, len(self.clip_codes)) if v else -1 for v in uniques]
                          or [-1], dtype=np.int64)
        result = lookup[codes]
        alone = result < 0
        result[alone] = -1 - np.arange(self.rows_alone, self.rows_alone + alone.sum())
        self.rows_alone += int(alone.sum())
        return result


def read_header(csv_path: Path) -> list[str]:
    if not csv_path.is_file():
        raise DataError(f"image list not found: {csv_path}" if not csv_path.exists()
                        else f"{csv_path} is a folder; --imagepathscsv needs a CSV file")
    if csv_path.suffix.lower() in EXCEL_SUFFIXES:
        return [str(c) for c in _read_excel(csv_path, nrows=0).columns]
    try:
        return [str(c) for c in pd.read_csv(csv_path, nrows=0, encoding="utf-8-sig").columns]
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path} is empty: expected a header row with a {'Path'!r}-like column "
                        "and one row per image") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read {csv_path} as a UTF-8 CSV: {error}") from error


def _read_excel(path: Path, nrows: int | None = None) -> pd.DataFrame:
    try:
        return pd.read_excel(path, dtype=str, keep_default_na=False, nrows=nrows)
    except Exception as error:  # openpyxl raises many types for a damaged file
        raise DataError(f"cannot read {path}: {error}") from error


def iter_chunks(csv_path: Path, chunk_rows: int = CHUNK_ROWS, usecols: list[str] | None = None
                ) -> Iterator[pd.DataFrame]:
    """The rows of the CSV as text (exactly as written), `chunk_rows` at a time."""
    if csv_path.suffix.lower() in EXCEL_SUFFIXES:
        frame = _read_excel(csv_path)
        frame = frame[usecols] if usecols else frame
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start:start + chunk_rows]
        return
    try:
        reader = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                             chunksize=chunk_rows, usecols=usecols)
        with reader:
            yield from reader
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read {csv_path} as a UTF-8 CSV: {error}") from error


def _scan(csv_path: Path, column: str, truth: Truth, chunk_rows: int, frame_column: str | None = None,
          planner: ClipPlanner | None = None) -> int:
    """Count the rows and check every label before any image is decoded (fail fast); with a
    `planner`, give it each row's clip, frame id and label."""
    wanted = [c for c in (column, truth.columns.class_, truth.columns.caption, truth.columns.video, frame_column)
              if c is not None]
    n_rows = 0
    for chunk in iter_chunks(csv_path, chunk_rows, usecols=list(dict.fromkeys(wanted))):
        targets = truth.targets(chunk, np.arange(n_rows + 2, n_rows + 2 + len(chunk)))
        if planner is not None:
            planner.add(chunk[truth.columns.video].to_numpy(), None if frame_column is None else
                        chunk[frame_column].to_numpy(), np.arange(n_rows, n_rows + len(chunk)), targets)
        n_rows += len(chunk)
    return n_rows


def _sampled_paths(csv_path: Path, column: str, n_rows: int, chunk_rows: int) -> tuple[list[str], list[int]]:
    """The paths (and CSV row numbers) of `sample_indices(n_rows)`, read a chunk at a time."""
    pick = sample_indices(n_rows)
    paths: list[str] = []
    rows: list[int] = []
    start = 0
    for chunk in iter_chunks(csv_path, chunk_rows, usecols=[column]):
        local = pick[(pick >= start) & (pick < start + len(chunk))] - start
        paths += chunk[column].iloc[local].tolist()
        rows += (local + start + 2).tolist()
        start += len(chunk)
    return paths, rows


def default_output(csv_path: Path) -> Path:
    return csv_path.parent / "predictions.csv"


def report_paths(output: Path) -> dict[str, Path]:
    stem = output.with_suffix("")
    return {"metrics": Path(f"{stem}_metrics.json"), "per_class": Path(f"{stem}_per_class.csv"),
            "confusion": Path(f"{stem}_confusion.csv"), "confusion_png": Path(f"{stem}_confusion.png")}


def predict_csv(checkpoint: str | os.PathLike | Sequence[str | os.PathLike], csv: str | os.PathLike,
                columns: cdata.Columns | str = cdata.Columns(), output: str | os.PathLike | None = None,
                image_root: str | os.PathLike | None = None, labels=None, prompts=None,
                batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", topk: int = DEFAULT_TOPK,
                skip_missing: bool = False, workers: int | None = None, chunk_rows: int | None = None,
                weights: Sequence[float] | None = None, tta: str = "none",
                classifier: Classifier | Ensemble | None = None, gallery_per_class: int = 0,
                adapt_bn: bool = True) -> dict:
    """Classify every image listed in the path column of `csv`; write one prediction per input row.

    `columns` names the input's columns (`clipmg.data.Columns`: path, class, caption, clip and
    frame; iMiGUE's names by default); a string is the path column's name, the others iMiGUE's.

    The output holds the input's columns, then `pred_class`, `pred_name`, `score` (probability
    of the predicted class), `top{i}_class`, `top{i}_name`, `top{i}_prob` for i = 1..topk, and
    `status` ("ok", or with `skip_missing` "missing"/"unreadable" for rows left without a
    prediction). When the CSV has a `Class` (id) or `Caption` column the metrics are computed
    over the labelled rows and written beside the output (`<output>_metrics.json`, ...).
    Several checkpoints are a score-level ensemble (`weights` weigh their probabilities; the
    output's probabilities are the ensemble's); `tta` (none, flip, crops) averages each frame's
    logits over its views. `adapt_bn`: first re-estimate the model's batch-norm statistics on a
    sample of the listed frames (`clipmg.inference.adapt`: from 32 frames on, pixels only).

    With a `Video ID` column, `clip_<output name>` (clip_predictions.csv) gets one row per clip:
    its id, true class (when labelled), the same prediction columns, `frames`, `frames_used` and,
    for a clip model reading K frames, `sampled_frames` (the Frame IDs of the K frames it read,
    ordered by the `Frame ID` column, else by row). A clip model classifies each clip by its
    temporal head: the mean head over all of the clip's frames, the others over those K frames
    (and each row as a clip of that one frame); other models average the logits of the clip's
    frames. The metrics then also hold the clip model's `clip_model_*` figures.
    Returns a summary: output, n_rows, n_predicted, n_skipped, skipped (the first rows),
    seconds, images_per_s, metrics (None without labels), metrics_files, clip_predictions
    (None without clips) and n_clips; with `gallery_per_class`, `gallery`: up to that many
    misclassified frames per true class, for the HTML report (`MisclassifiedGallery.to_dict`).
    """
    csv_path = Path(csv)
    columns = cdata.Columns(path=columns) if isinstance(columns, str) else columns
    chunk_rows = chunk_rows or CHUNK_ROWS
    check_inference_options(batch_size, topk, workers)
    header = read_header(csv_path)
    path_column = cdata.find_column(header, columns.path, csv_path)
    if path_column is None:
        raise DataError(f"column {columns.path!r} is not in {csv_path}; its columns are "
                        + (", ".join(repr(c) for c in header) or "none") + " (choose one with --columnname)")
    output = Path(output) if output is not None else default_output(csv_path)
    if output.resolve() == csv_path.resolve():
        raise DataError(f"--output {output} is the input CSV itself; choose another file")
    for path in (output, clip_predictions_path(output), *report_paths(output).values()):
        check_output_file(path, "--output")
    label_columns = LabelColumns(class_=cdata.find_column(header, columns.class_, csv_path),
                                 caption=cdata.find_column(header, columns.caption, csv_path),
                                 video=cdata.find_column(header, columns.video, csv_path))
    clashes = [c for c in header if c in PREDICTION_COLUMNS or c == STATUS_COLUMN
               or re.fullmatch(r"top\d+_(class|name|prob)", c)]

    load_start = time.perf_counter()
    classifier = classifier or load_classifier(checkpoint, weights, device=device, labels=labels, prompts=prompts,
                                               tta=tta)
    load_seconds = time.perf_counter() - load_start
    truth = Truth(classifier, label_columns, str(csv_path))
    planner = ClipPlanner() if label_columns.video is not None else None
    n_rows = _scan(csv_path, path_column, truth, chunk_rows, cdata.find_column(header, columns.frame, csv_path), planner)
    clips = (ClipCollector(planner.plan(classifier.clip_frames, classifier.reads_whole_clip), classifier)
             if planner is not None else None)
    if n_rows == 0:
        raise DataError(f"{csv_path} has a header but no rows: nothing to predict")
    if clashes:
        logger.warning("%s already has the column(s) %s; the output replaces them with the new predictions",
                       csv_path, ", ".join(clashes))
    roots = image_roots(image_root, csv=csv_path, config=classifier.config)
    adapted = 0
    if adapt_bn:
        sample, sample_rows = _sampled_paths(csv_path, path_column, n_rows, chunk_rows)
        adapted = adapt_classifier(classifier, sample, sample_rows, roots, source=str(csv_path), column=path_column,
                                   n_frames=n_rows, batch_size=batch_size, workers=workers)
    transform = classifier.transform()

    kept_logits, kept_targets, kept_clips = [], [], []
    gallery = MisclassifiedGallery(gallery_per_class, classifier.num_classes)
    skipped: list[dict] = []
    n_skipped = n_unlabelled = 0
    start = time.perf_counter()
    first_row = 2
    with streamed_output(output, "--output") as stream, progress(total=n_rows, desc="predict", unit="img") as bar:
        for chunk_number, chunk in enumerate(iter_chunks(csv_path, chunk_rows)):
            rows = np.arange(first_row, first_row + len(chunk))
            first_row += len(chunk)
            scored = score_images(classifier, chunk[path_column].to_numpy(), rows, roots, source=str(csv_path),
                                  column=path_column, transform=transform, batch_size=batch_size,
                                  workers=workers, skip_missing=skip_missing, bar=bar,
                                  keep_features=clips.plan.wanted(rows[0] - 2, len(chunk)) if clips else None)
            if clips is not None:
                clips.add(rows[0] - 2, clips.plan.codes(chunk[label_columns.video].to_numpy()), scored)
            predictions = prediction_frame(scored.logits, scored.status, classifier, topk)
            out = pd.concat([chunk.drop(columns=clashes).reset_index(drop=True), predictions], axis=1)
            stream.write(out.to_csv(None, header=chunk_number == 0, index=False, float_format="%.6f",
                                    lineterminator="\n"), rows=len(out))
            n_skipped += len(scored.reasons)
            skipped += [{"row": int(rows[i]), "path": str(chunk[path_column].iat[i]), "status": state,
                         "reason": message} for i, state, message in scored.reasons[:MAX_LISTED_SKIPS - len(skipped)]]
            if label_columns.any:
                targets = truth.targets(chunk, rows)
                use = scored.ok & (targets >= 0)
                n_unlabelled += int((scored.ok & (targets < 0)).sum())
                kept_logits.append(scored.logits[torch.from_numpy(use)])
                kept_targets.append(targets[use])
                gallery.add(scored.logits, np.where(use, targets, -1), chunk[path_column].to_numpy(), rows)
                if label_columns.video is not None:
                    kept_clips.append(truth.clips(chunk)[use])
    seconds = time.perf_counter() - start
    n_predicted = n_rows - n_skipped
    summary = {"output": str(output), "n_rows": n_rows, "n_predicted": n_predicted, "n_skipped": n_skipped,
               "skipped": skipped, "seconds": seconds, "load_seconds": load_seconds,
               "images_per_s": n_predicted / seconds if seconds > 0 else float("nan"),
               "checkpoint": classifier.description if isinstance(classifier, Ensemble)
               else str(classifier.checkpoint or checkpoint), "tta": classifier.tta, "device": str(classifier.device),
               "batch_size": batch_size, "bn_adapted_on": adapted,
               "workers": default_workers(classifier.device) if workers is None else workers,
               "image_roots": [str(r) for r in roots], "metrics": None, "metrics_files": None,
               "label_column": label_columns.class_ or label_columns.caption, "n_unlabelled": n_unlabelled,
               "clip_predictions": None, "n_clips": len(clips.plan.keys) if clips else 0}
    if clips is not None:
        summary["clip_predictions"] = str(clip_predictions_path(output))
        with output_errors(clip_predictions_path(output)), atomic_output(clip_predictions_path(output)) as handle:
            clips.table(topk, label_columns.video, label_columns.any).to_csv(
                handle, index=False, float_format="%.6f", lineterminator="\n")
    if kept_targets and sum(len(t) for t in kept_targets):
        paths = report_paths(output)
        summary["metrics"] = write_report(
            torch.cat(kept_logits), torch.from_numpy(np.concatenate(kept_targets)), classifier.class_names,
            paths, class_ids=classifier.class_ids,
            clip_ids=np.concatenate(kept_clips) if kept_clips else None,
            clip_model=clips.model_metrics_input() if clips is not None else None,
            extra={"source": str(csv_path), "checkpoint": summary["checkpoint"], "n_unlabelled": n_unlabelled,
                   "n_skipped": n_skipped, "label_column": summary["label_column"], "bn_adapted_on": adapted})
        summary["metrics_files"] = {k: str(v) for k, v in paths.items()}
        if gallery_per_class > 0:
            summary["gallery"] = gallery.to_dict(roots)
    return summary
