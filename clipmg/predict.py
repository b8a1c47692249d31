"""Classify the images listed in a CSV (`test.py`, `clipmg predict`) and evaluate a checkpoint
on metadata (`clipmg evaluate`).

The class prompts are encoded once per run into a (C, D) table; images are decoded in
DataLoader workers (JPEGs at reduced size where the model input allows), batched, and scored
as ``scale * normalize(image_features) @ class_embeddings.T``, exactly as training-time
validation does, so predict, evaluate and validation report the same figures. The input CSV
is read and the predictions written in chunks: memory does not grow with the number of rows
(except for one row of C logits per labelled image, kept for the metrics).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from clipmg import data as cdata
from clipmg.checkpoint import load_checkpoint, resolve_checkpoint
from clipmg.data.labels import name_key
from clipmg.errors import DataError, ImageError, ModelError
from clipmg.evaluate import metrics_summary_lines, per_class_lines, write_report
from clipmg.prompts import PromptSet, build_class_embeddings, load_prompt_set
from clipmg.utils import logger, progress, resolve_device, threads_beside_workers

DEFAULT_CHECKPOINT = "checkpoints/best"
DEFAULT_BATCH_SIZE = 64
DEFAULT_TOPK = 5
CHUNK_ROWS = 16384  # rows read, classified and written at a time
MAX_LISTED_SKIPS = 100  # skipped rows kept in the summary (all are marked in the output)
EXCEL_SUFFIXES = (".xlsx", ".xlsm")

OK, MISSING, UNREADABLE = "ok", "missing", "unreadable"
PREDICTION_COLUMNS = ("pred_class", "pred_name", "score")
STATUS_COLUMN = "status"


CORES_PER_CPU_WORKER = 8


def default_workers(device: str | torch.device = "auto") -> int:
    """Decoding processes: min(4, cores) beside a GPU. On the CPU each worker takes a whole
    core from the model (threads_beside_workers), yet decoding and preprocessing a frame costs
    about a tenth of the image tower's forward (0.4 ms against 4.4 ms for a 112 px frame and
    clipmg-small on 2 idle cores): one worker per 8 cores, none below (docs/benchmarks.md)."""
    cores = os.cpu_count() or 1
    return min(4, cores) if resolve_device(device).type == "cuda" else min(4, cores // CORES_PER_CPU_WORKER)


# ------------------------------------------------------------------------- classifier
@dataclass
class Classifier:
    """A model and its class embeddings (built once): images in, (B, C) logits out."""

    model: torch.nn.Module
    class_ids: list[int]
    class_names: list[str]
    class_embeddings: torch.Tensor | None  # (C, D) normalised, float32, on the model's device;
    # None for a model with its own classifier head
    scale: torch.Tensor  # scalar float32 logit scale (exp already applied)
    preprocess: dict
    device: torch.device
    config: dict = field(default_factory=dict)
    checkpoint: Path | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT, device: str = "auto",
                        labels: str | os.PathLike | Mapping[int, str] | None = None,
                        prompts: str | os.PathLike | None = None) -> Classifier:
        """Load a checkpoint; `labels` (Clip_label.csv) renames its classes, `prompts` replaces
        its prompt set. The class ids always stay those the checkpoint was trained on."""
        device = resolve_device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu (or auto)")
        folder = resolve_checkpoint(checkpoint)
        model, config = load_checkpoint(folder, device)
        class_ids = [int(i) for i in config["class_ids"]]
        names = class_names_for(class_ids, list(config["class_names"]), labels, folder)
        prompt_set = load_prompt_set(prompts) if prompts else PromptSet.from_dict(config.get("prompts") or {}, folder)
        return cls.from_model(model, class_ids, names, prompt_set, preprocess=config.get("preprocess"),
                              config=config, checkpoint=folder)

    @classmethod
    def from_model(cls, model, class_ids: Sequence[int], class_names: Sequence[str],
                   prompt_set: PromptSet | None = None, preprocess: Mapping | None = None,
                   config: dict | None = None, checkpoint: Path | None = None) -> Classifier:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            embeddings = None if model.has_classifier_head else build_class_embeddings(
                model, list(class_names), prompt_set, class_ids=list(class_ids)).float()
            scale = model.scale().detach().float()
        return cls(model=model, class_ids=list(class_ids), class_names=list(class_names),
                   class_embeddings=embeddings, scale=scale,
                   preprocess=dict(preprocess or model.preprocess_config), device=device,
                   config=config or {}, checkpoint=checkpoint)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def autocast(self):
        """bf16 (fp16 where bf16 is missing) on CUDA; fp32 elsewhere (bf16 is slow on most CPUs)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """(B, C) float32 logits on the CPU for a batch of preprocessed images (and the per-frame
        `extras` the model takes, see `ContrastiveModel.extra_inputs`)."""
        images = self.prepare_images(images)
        extras = {key: value.to(self.device, non_blocking=True) for key, value in extras.items()}
        with self.autocast():
            logits = self.model.class_logits(images, self.class_embeddings, **extras)
        return logits.float().cpu()

    def extra_fields(self, paths: Sequence[str], roots: Sequence[Path]) -> dict:
        """The per-frame inputs besides the image that the model takes, for these images."""
        return cdata.load_extra_fields(self.model.extra_inputs, paths, roots, self.config.get("train") or {})

    def transform(self):
        """Decoded pixels -> uint8 (3, S, S); `prepare_images` normalises whole batches."""
        return cdata.transform_for_model(self.preprocess, train=False, normalize=False)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch from `transform` (uint8) or already normalised (float) -> the model's
        normalised float input on the device."""
        images = images.to(self.device, non_blocking=True)
        return cdata.normalize_images(images, self.preprocess.get("mean", cdata.OPENAI_CLIP_MEAN),
                                      self.preprocess.get("std", cdata.OPENAI_CLIP_STD))


def class_names_for(class_ids: list[int], names: list[str], labels, checkpoint: Path) -> list[str]:
    """The checkpoint's class names, or those of a label file whose ids must be the same."""
    if labels is None:
        return names
    source = "the given labels" if isinstance(labels, Mapping) else str(labels)
    table = dict(labels) if isinstance(labels, Mapping) else cdata.load_labels(labels)
    table = {int(k): v for k, v in table.items()}
    if set(table) != set(class_ids):
        extra, lacking = sorted(set(table) - set(class_ids)), sorted(set(class_ids) - set(table))
        raise DataError(
            f"{source} does not fit checkpoint {checkpoint}: the checkpoint was trained on class ids "
            f"{_id_range(class_ids)}; the label file " + "; ".join(
                part for part in (f"also has {extra}" if extra else "", f"lacks {lacking}" if lacking else "")
                if part) + ". Use the label file the checkpoint was trained with, or leave out --labels.")
    return [table[i] for i in class_ids]


def _id_range(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    if ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 3:
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids))


# -------------------------------------------------------------------- images in workers
def resolve_image_path(path: str, roots: Sequence[Path]) -> Path | None:
    """The first existing file among `path` under each root (absolute paths as they are)."""
    path = path.strip()
    if not path:
        return None
    candidate = Path(path.replace("\\", "/"))
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for root in roots:
        full = root / candidate
        if full.is_file():
            return full
    return None


class ImageListDataset(Dataset):
    """Image paths -> preprocessed tensors, decoded in DataLoader workers.

    A missing or unreadable image is not an exception here (a worker's traceback would bury
    the message); the item carries its status and the caller decides to fail or skip.
    """

    def __init__(self, paths: Sequence[str], roots: Sequence[Path], transform,
                 extra_fields: Mapping[str, np.ndarray] | None = None):
        self.paths = paths
        self.roots = [Path(r) for r in roots]
        self.transform = transform
        self.extra_fields = dict(extra_fields or {})
        self.decode_size = getattr(transform, "decode_size", None)  # JPEG draft-mode decoding

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = resolve_image_path(str(self.paths[index]), self.roots)
        if path is None:
            return {"index": index, "status": MISSING, "image": None, "error": ""}
        try:
            image = self.transform(cdata.load_image(path, max_size=self.decode_size))
        except ImageError as error:
            return {"index": index, "status": UNREADABLE, "image": None, "error": str(error)}
        return {"index": index, "status": OK, "image": image, "error": "", "extras": self.extras_at(index)}

    def extras_at(self, index: int) -> dict:
        return {key: torch.as_tensor(values[index]) for key, values in self.extra_fields.items()}


def collate_images(items: list[dict]) -> dict:
    good = [item for item in items if item["image"] is not None]
    extra_keys = list(good[0].get("extras", {})) if good else []
    return {
        "extras": {key: torch.stack([item["extras"][key] for item in good]) for key in extra_keys},
        "images": torch.stack([item["image"] for item in good]) if good else None,
        "indices": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "bad": [(item["index"], item["status"], item["error"]) for item in items if item["image"] is None],
        "size": len(items),
    }


@dataclass
class Scored:
    """The result of classifying a list of images: logits, and the status of each row."""

    logits: torch.Tensor  # (n, C) float32; rows that were skipped hold NaN
    status: np.ndarray  # (n,) "ok" | "missing" | "unreadable"
    reasons: list[tuple[int, str, str]]  # (position, status, message) of each skipped row

    @property
    def ok(self) -> np.ndarray:
        return self.status == OK


def image_problem(status: str, path: str, row: int, source: str, roots: Sequence[Path], error: str,
                  column: str) -> str:
    where = f"{source} row {row}, column {column!r}"
    if status == MISSING and not path:
        return f"{where}: empty image path"
    if status == MISSING:
        looked = "" if Path(path).is_absolute() else " (looked under " + ", ".join(str(r) for r in roots) + ")"
        return f"image not found: {path} ({where}){looked}"
    return f"{error} ({where})"


def score_images(classifier: Classifier, paths: Sequence[str], rows: Sequence[int], roots: Sequence[Path],
                 *, source: str, column: str = "Path", transform=None, batch_size: int = DEFAULT_BATCH_SIZE,
                 workers: int | None = None, skip_missing: bool = False, bar=None) -> Scored:
    """Classify `paths` (found under `roots`) in batches decoded by `workers` processes.

    A missing or unreadable image raises ImageError naming the file and its row of `source`,
    unless `skip_missing` (then its row gets status "missing"/"unreadable" and NaN logits).
    """
    n = len(paths)
    workers = default_workers(classifier.device) if workers is None else workers
    batches = -(-n // batch_size)
    workers = max(0, min(workers, batches))
    dataset = ImageListDataset(paths, roots, transform or classifier.transform(),
                               extra_fields=classifier.extra_fields(paths, roots))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_images, pin_memory=classifier.device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    logits = torch.full((n, classifier.num_classes), float("nan"), dtype=torch.float32)
    status = np.full(n, OK, dtype=object)
    reasons: list[tuple[int, str, str]] = []
    with threads_beside_workers(classifier.device, workers):
        for batch in loader:
            _take_batch(batch, classifier, logits, status, reasons, paths, rows, roots, source, column,
                        skip_missing)
            if bar is not None:
                bar.update(batch["size"])
    return Scored(logits=logits, status=status, reasons=reasons)


def _take_batch(batch, classifier, logits, status, reasons, paths, rows, roots, source, column,
                skip_missing) -> None:
    for index, state, error in batch["bad"]:
        message = image_problem(state, str(paths[index]), int(rows[index]), source, roots, error, column)
        if not skip_missing:
            hint = "pass --image-root" if state == MISSING else "fix or remove the file"
            raise ImageError(f"{message}; {hint}, or --skip-missing to predict the other rows")
        status[index] = state
        reasons.append((index, state, message))
    if batch["images"] is not None:
        logits[batch["indices"]] = classifier.logits(batch["images"], **batch["extras"])


def image_roots(csv_path: Path | None, image_root: str | os.PathLike | None, config: dict) -> list[Path]:
    """Where relative image paths are looked for, in order: --image-root alone when given;
    else the CSV's folder, `training/` in it, and the image folder the checkpoint was trained on."""
    if image_root is not None:
        return [Path(image_root)]
    roots: list[Path] = []
    if csv_path is not None:
        roots += [csv_path.parent, csv_path.parent / "training"]
    roots += training_image_roots(config)
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def training_image_roots(config: dict) -> list[Path]:
    train = config.get("train") or {}
    if train.get("image_root"):
        return [Path(train["image_root"])]
    if train.get("metadata"):
        return [Path(cdata.default_image_root(train["metadata"]))]
    return []


# ------------------------------------------------------------------------- ground truth
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
                                f"({_id_range(self.class_ids)})")
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


# ---------------------------------------------------------------------------- the CSV
def _find_column(header: Sequence[str], wanted: str) -> str | None:
    """`wanted` itself, else the one column equal to it ignoring case and spaces."""
    if wanted in header:
        return wanted
    key = " ".join(wanted.split()).casefold()
    loose = [name for name in header if " ".join(str(name).split()).casefold() == key]
    return loose[0] if len(loose) == 1 else None


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


def _scan(csv_path: Path, column: str, truth: Truth, chunk_rows: int) -> int:
    """Count the rows and check every label before any image is decoded (fail fast)."""
    wanted = [c for c in (column, truth.columns.class_, truth.columns.caption) if c is not None]
    n_rows = 0
    for chunk in iter_chunks(csv_path, chunk_rows, usecols=list(dict.fromkeys(wanted))):
        truth.targets(chunk, np.arange(n_rows + 2, n_rows + 2 + len(chunk)))
        n_rows += len(chunk)
    return n_rows


def prediction_frame(scored: Scored, classifier: Classifier, topk: int) -> pd.DataFrame:
    """pred_class, pred_name, score, top{i}_class/_name/_prob, status; empty where skipped."""
    ok = scored.ok
    n, k = len(ok), min(topk, classifier.num_classes)
    probs = torch.softmax(scored.logits, dim=1)
    top_p, top_i = probs.nan_to_num(-1.0).topk(k, dim=1)
    top_i, top_p = top_i.numpy(), top_p.numpy().astype(np.float64)
    ids = np.asarray(classifier.class_ids, dtype=np.int64)
    names = np.asarray(classifier.class_names, dtype=object)
    columns: dict[str, object] = {}

    def ids_at(j):
        return pd.Series(ids[top_i[:, j]] if n else [], dtype="Int64").mask(~ok)

    def names_at(j):
        return np.where(ok, names[top_i[:, j]], "")

    def probs_at(j):
        return np.where(ok, top_p[:, j], np.nan)

    columns["pred_class"], columns["pred_name"], columns["score"] = ids_at(0), names_at(0), probs_at(0)
    for j in range(k):
        columns[f"top{j + 1}_class"] = ids_at(j)
        columns[f"top{j + 1}_name"] = names_at(j)
        columns[f"top{j + 1}_prob"] = probs_at(j)
    columns[STATUS_COLUMN] = scored.status
    return pd.DataFrame(columns)


def default_output(csv_path: Path) -> Path:
    return csv_path.parent / "predictions.csv"


def report_paths(output: Path) -> dict[str, Path]:
    stem = output.with_suffix("")
    return {"metrics": Path(f"{stem}_metrics.json"), "per_class": Path(f"{stem}_per_class.csv"),
            "confusion": Path(f"{stem}_confusion.csv"), "confusion_png": Path(f"{stem}_confusion.png")}


def _check_options(batch_size: int, topk: int, workers: int | None) -> None:
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if topk < 1:
        raise DataError(f"--topk must be at least 1, got {topk}")
    if workers is not None and workers < 0:
        raise DataError(f"--workers must be 0 or more, got {workers}")


@contextlib.contextmanager
def _atomic_output(path: Path):
    """A file handle whose content replaces `path` only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def predict_csv(checkpoint: str | os.PathLike, csv: str | os.PathLike, column: str = "Path",
                output: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None, labels=None, prompts=None,
                batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", topk: int = DEFAULT_TOPK,
                skip_missing: bool = False, workers: int | None = None, class_column: str = "Class",
                caption_column: str = "Caption", video_column: str = "Video ID",
                chunk_rows: int = CHUNK_ROWS, classifier: Classifier | None = None) -> dict:
    """Classify every image listed in `column` of `csv`; write one prediction per input row.

    The output holds the input's columns, then `pred_class`, `pred_name`, `score` (probability
    of the predicted class), `top{i}_class`, `top{i}_name`, `top{i}_prob` for i = 1..topk, and
    `status` ("ok", or with `skip_missing` "missing"/"unreadable" for rows left without a
    prediction). When the CSV has a `Class` (id) or `Caption` column the metrics are computed
    over the labelled rows and written beside the output (`<output>_metrics.json`, ...).
    Returns a summary: output, n_rows, n_predicted, n_skipped, skipped (the first rows),
    seconds, images_per_s, metrics (None without labels) and metrics_files.
    """
    csv_path = Path(csv)
    _check_options(batch_size, topk, workers)
    header = read_header(csv_path)
    path_column = _find_column(header, column)
    if path_column is None:
        raise DataError(f"column {column!r} is not in {csv_path}; its columns are "
                        + (", ".join(repr(c) for c in header) or "none") + " (choose one with --columnname)")
    output = Path(output) if output is not None else default_output(csv_path)
    if output.resolve() == csv_path.resolve():
        raise DataError(f"--output {output} is the input CSV itself; choose another file")
    label_columns = LabelColumns(class_=_find_column(header, class_column),
                                 caption=_find_column(header, caption_column),
                                 video=_find_column(header, video_column))
    clashes = [c for c in header if c in PREDICTION_COLUMNS or c == STATUS_COLUMN
               or re.fullmatch(r"top\d+_(class|name|prob)", c)]

    load_start = time.perf_counter()
    classifier = classifier or Classifier.from_checkpoint(checkpoint, device=device, labels=labels, prompts=prompts)
    load_seconds = time.perf_counter() - load_start
    truth = Truth(classifier, label_columns, str(csv_path))
    n_rows = _scan(csv_path, path_column, truth, chunk_rows)
    if n_rows == 0:
        raise DataError(f"{csv_path} has a header but no rows: nothing to predict")
    if clashes:
        logger.warning("%s already has the column(s) %s; the output replaces them with the new predictions",
                       csv_path, ", ".join(clashes))
    roots = image_roots(csv_path, image_root, classifier.config)
    transform = classifier.transform()

    kept_logits, kept_targets, kept_clips = [], [], []
    skipped: list[dict] = []
    n_skipped = n_unlabelled = 0
    start = time.perf_counter()
    first_row = 2
    with _atomic_output(output) as handle, progress(total=n_rows, desc="predict", unit="img") as bar:
        for chunk_number, chunk in enumerate(iter_chunks(csv_path, chunk_rows)):
            rows = np.arange(first_row, first_row + len(chunk))
            first_row += len(chunk)
            scored = score_images(classifier, chunk[path_column].to_numpy(), rows, roots, source=str(csv_path),
                                  column=path_column, transform=transform, batch_size=batch_size,
                                  workers=workers, skip_missing=skip_missing, bar=bar)
            predictions = prediction_frame(scored, classifier, topk)
            out = pd.concat([chunk.drop(columns=clashes).reset_index(drop=True), predictions], axis=1)
            out.to_csv(handle, header=chunk_number == 0, index=False, float_format="%.6f", lineterminator="\n")
            n_skipped += len(scored.reasons)
            skipped += [{"row": int(rows[i]), "path": str(chunk[path_column].iat[i]), "status": state,
                         "reason": message} for i, state, message in scored.reasons[:MAX_LISTED_SKIPS - len(skipped)]]
            if label_columns.any:
                targets = truth.targets(chunk, rows)
                use = scored.ok & (targets >= 0)
                n_unlabelled += int((scored.ok & (targets < 0)).sum())
                kept_logits.append(scored.logits[torch.from_numpy(use)])
                kept_targets.append(targets[use])
                if label_columns.video is not None:
                    kept_clips.append(truth.clips(chunk)[use])
    seconds = time.perf_counter() - start
    n_predicted = n_rows - n_skipped
    summary = {"output": str(output), "n_rows": n_rows, "n_predicted": n_predicted, "n_skipped": n_skipped,
               "skipped": skipped, "seconds": seconds, "load_seconds": load_seconds,
               "images_per_s": n_predicted / seconds if seconds > 0 else float("nan"),
               "checkpoint": str(classifier.checkpoint or checkpoint), "device": str(classifier.device),
               "batch_size": batch_size,
               "workers": default_workers(classifier.device) if workers is None else workers,
               "image_roots": [str(r) for r in roots], "metrics": None, "metrics_files": None,
               "label_column": label_columns.class_ or label_columns.caption, "n_unlabelled": n_unlabelled}
    if kept_targets and sum(len(t) for t in kept_targets):
        paths = report_paths(output)
        summary["metrics"] = write_report(
            torch.cat(kept_logits), torch.from_numpy(np.concatenate(kept_targets)), classifier.class_names,
            paths, class_ids=classifier.class_ids,
            clip_ids=np.concatenate(kept_clips) if kept_clips else None,
            extra={"source": str(csv_path), "checkpoint": summary["checkpoint"], "n_unlabelled": n_unlabelled,
                   "n_skipped": n_skipped, "label_column": summary["label_column"]})
        summary["metrics_files"] = {k: str(v) for k, v in paths.items()}
    return summary


# --------------------------------------------------------------------------- evaluate
def default_eval_dir(checkpoint: Path) -> Path:
    """`<run>/eval/<checkpoint name>`: beside the checkpoint, never inside it (a later save
    of the checkpoint replaces its folder)."""
    return checkpoint.parent / "eval" / checkpoint.name


def evaluate_checkpoint(checkpoint: str | os.PathLike, metadata: str | os.PathLike, labels=None,
                        split: str | os.PathLike | None = None, subset: str = "val",
                        out_dir: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                        columns: cdata.Columns | None = None, prompts=None,
                        batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                        workers: int | None = None, skip_missing: bool = False, topk: int = DEFAULT_TOPK,
                        classifier: Classifier | None = None) -> dict:
    """Metrics of a checkpoint on the frames of `metadata` (or of `split`'s `subset`: "train",
    "val" or "all"). Writes metrics.json, per_class.csv, confusion.csv, confusion.png and
    predictions.csv into `out_dir` (default `<run>/eval/<checkpoint name>`); returns the metrics
    (with `n_images`, `n_skipped`, `images_per_s`, `out_dir`)."""
    _check_options(batch_size, topk, workers)
    columns = columns or cdata.Columns()
    classifier = classifier or Classifier.from_checkpoint(checkpoint, device=device, labels=labels, prompts=prompts)
    label_table = dict(zip(classifier.class_ids, classifier.class_names))
    frames, source = cdata.select_frames(metadata, label_table, split, subset, columns)
    roots = [Path(image_root)] if image_root is not None else list(dict.fromkeys(
        [Path(cdata.default_image_root(metadata)), *training_image_roots(classifier.config)]))
    index_of = {cid: i for i, cid in enumerate(classifier.class_ids)}
    targets = torch.tensor([index_of[int(c)] for c in frames["class_id"]], dtype=torch.long)
    start = time.perf_counter()
    with progress(total=len(frames), desc="evaluate", unit="img") as bar:
        scored = score_images(classifier, frames["path"].to_numpy(), frames["row"].to_numpy(), roots,
                              source=str(source), column=columns.path, batch_size=batch_size, workers=workers,
                              skip_missing=skip_missing, bar=bar)
    seconds = time.perf_counter() - start
    ok = scored.ok
    if not ok.any():
        raise ImageError(f"none of the {len(frames)} images of {source} could be read "
                         f"(first: {scored.reasons[0][2]})")
    checkpoint_folder = classifier.checkpoint or Path(checkpoint)
    out = Path(out_dir) if out_dir is not None else default_eval_dir(checkpoint_folder)
    paths = {"metrics": out / "metrics.json", "per_class": out / "per_class.csv",
             "confusion": out / "confusion.csv", "confusion_png": out / "confusion.png"}
    keep = torch.from_numpy(ok)
    metrics = write_report(
        scored.logits[keep], targets[keep], classifier.class_names, paths, class_ids=classifier.class_ids,
        clip_ids=frames["video_id"].to_numpy()[ok],
        extra={"n_skipped": int((~ok).sum()), "seconds": seconds, "images_per_s": int(ok.sum()) / seconds,
               "checkpoint": str(checkpoint_folder), "metadata": str(metadata),
               "split": str(split) if split is not None else None,
               "subset": subset if split is not None else None, "out_dir": str(out)})
    standard = [c for c in ("path", "class_id", "video_id", "frame_id", "caption", "row") if c in frames]
    predictions = pd.concat([frames[standard], prediction_frame(scored, classifier, topk)], axis=1)
    with _atomic_output(out / "predictions.csv") as handle:
        predictions.to_csv(handle, index=False, float_format="%.6f", lineterminator="\n")
    if scored.reasons:
        metrics["skipped"] = [{"row": int(frames["row"].iat[i]), "status": state, "reason": message}
                              for i, state, message in scored.reasons[:MAX_LISTED_SKIPS]]
    return metrics


# -------------------------------------------------------------------------------- CLI
def add_common_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help=f"checkpoint folder, or a run folder (its best/) (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--labels", help="Clip_label.csv to rename the classes (ids must be the checkpoint's); "
                                         "default: the class names stored in the checkpoint")
    parser.add_argument("--prompts", help="prompt set (file or name) replacing the checkpoint's")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: min(4, CPU cores) with a GPU; on the CPU one "
                             "per 8 cores, so none below 8; 0 decodes in the main process)")
    parser.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="classes listed per image (default 5)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="predict the other rows when an image is missing or unreadable, and list those")


def add_predict_arguments(parser) -> None:
    parser.add_argument("--imagepathscsv", required=True, help="CSV with one image path per row")
    parser.add_argument("--columnname", default="Path", help="column holding the image paths (default Path)")
    parser.add_argument("--image-root", help="folder the paths are relative to (default: the CSV's folder, then "
                                             "training/ in it, then the checkpoint's training images)")
    parser.add_argument("--output", help="predictions CSV (default predictions.csv beside the input)")
    add_common_arguments(parser)
    parser.add_argument("--class-column", default="Class", help="class id column, for metrics (default Class)")
    parser.add_argument("--caption-column", default="Caption",
                        help="class name column, used for metrics when there is no class id (default Caption)")
    parser.add_argument("--video-column", default="Video ID", help="clip column, for clip-level accuracy")


def add_evaluate_arguments(parser) -> None:
    parser.add_argument("--metadata", required=True, help="train.xlsx or a CSV of frames with their classes")
    parser.add_argument("--split", help="split CSV (from `clipmg split` or a run's split.csv)")
    parser.add_argument("--subset", default="val", choices=("train", "val", "all"),
                        help="which frames of --split (default val)")
    parser.add_argument("--image-root", help="folder the Path column is relative to "
                                             "(default training/ beside the metadata)")
    parser.add_argument("--out", help="folder for metrics.json, per_class.csv, confusion.csv/png "
                                      "(default <run>/eval/<checkpoint>)")
    add_common_arguments(parser)
    for column, default in (("path", "Path"), ("class", "Class"), ("video", "Video ID"),
                            ("frame", "Frame ID"), ("caption", "Caption")):
        parser.add_argument(f"--{column}-column", default=default, help=f"column name (default {default!r})")


def run_from_args(args) -> int:
    summary = predict_csv(args.checkpoint, args.imagepathscsv, column=args.columnname, output=args.output,
                          image_root=args.image_root, labels=args.labels, prompts=args.prompts,
                          batch_size=args.batch_size, device=args.device, topk=args.topk,
                          skip_missing=args.skip_missing, workers=args.workers, class_column=args.class_column,
                          caption_column=args.caption_column, video_column=args.video_column)
    print(f"wrote {summary['output']}: {summary['n_rows']} rows, {summary['n_predicted']} predicted, "
          f"{summary['n_skipped']} skipped")
    if summary["n_skipped"]:
        print(f"skipped rows (status column of the output says why; first {len(summary['skipped'])}):")
        for item in summary["skipped"][:20]:
            print(f"  {item['reason']}")
        if summary["n_skipped"] > 20:
            print(f"  ... and {summary['n_skipped'] - 20} more")
    print(f"{summary['n_predicted']} images in {summary['seconds']:.1f} s: {summary['images_per_s']:.1f} images/s "
          f"(batch {summary['batch_size']}, decoding workers {summary['workers']}, {summary['device']})")
    if summary["n_predicted"] == 0:
        print("no image could be predicted: check the paths, --image-root ("
              + ", ".join(summary["image_roots"]) + " were searched) and the images")
        return 1
    metrics = summary["metrics"]
    if metrics is None:
        if summary["label_column"]:
            print(f"no metrics: no predicted row has a label in column {summary['label_column']!r}")
        return 0
    unlabelled = f"; {summary['n_unlabelled']} predicted rows without a label are not scored" \
        if summary["n_unlabelled"] else ""
    print(f"metrics against column {summary['label_column']!r} over {metrics['n_images']} labelled frames{unlabelled}:")
    _print_metrics(metrics, summary["metrics_files"])
    return 0


def evaluate_from_args(args) -> int:
    columns = cdata.Columns(path=args.path_column, class_=args.class_column, video=args.video_column,
                            frame=args.frame_column, caption=args.caption_column)
    metrics = evaluate_checkpoint(args.checkpoint, args.metadata, labels=args.labels, split=args.split,
                                  subset=args.subset, out_dir=args.out, image_root=args.image_root,
                                  columns=columns, prompts=args.prompts, batch_size=args.batch_size,
                                  device=args.device, workers=args.workers, skip_missing=args.skip_missing,
                                  topk=args.topk)
    what = f"{args.split} ({args.subset})" if args.split else args.metadata
    print(f"evaluated {metrics['checkpoint']} on {metrics['n_images']} frames of {what} in "
          f"{metrics['seconds']:.1f} s ({metrics['images_per_s']:.1f} images/s)")
    if metrics["n_skipped"]:
        print(f"skipped {metrics['n_skipped']} unreadable or missing images, e.g. {metrics['skipped'][0]['reason']}")
    out = Path(metrics["out_dir"])
    _print_metrics(metrics, {"metrics": out / "metrics.json", "per_class": out / "per_class.csv",
                             "confusion": out / "confusion.csv", "confusion_png": out / "confusion.png",
                             "predictions": out / "predictions.csv"})
    return 0


def _print_metrics(metrics: dict, files: Mapping[str, os.PathLike]) -> None:
    for line in metrics_summary_lines(metrics):
        print(f"  {line}")
    per_class = pd.read_csv(files["per_class"])
    print("  per-class recall (support = labelled frames):")
    for line in per_class_lines(per_class):
        print(f"    {line}")
    print("  wrote " + ", ".join(str(path) for path in files.values()))
