"""Classify a list of images: (n, C) logits with a status per row, and the predictions table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg.errors import DataError
from clipmg.inference.batches import DEFAULT_BATCH_SIZE, OK, iter_image_batches
from clipmg.inference.classifier import Classifier
from clipmg.inference.ensemble import Ensemble

STATUS_COLUMN = "status"


@dataclass
class Scored:
    """The result of classifying a list of images: logits, and the status of each row."""

    logits: torch.Tensor  # (n, C) float32; rows that were skipped hold NaN
    status: np.ndarray  # (n,) "ok" | "missing" | "unreadable"
    reasons: list[tuple[int, str, str]]  # (position, status, message) of each skipped row
    features: dict[int, torch.Tensor] = field(default_factory=dict)  # a clip model's frame features, kept rows

    @property
    def ok(self) -> np.ndarray:
        return self.status == OK


def score_images(classifier: Classifier | Ensemble, paths: Sequence[str], rows: Sequence[int],
                 roots: Sequence[Path], *, source: str, column: str = "Path", transform=None,
                 batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, skip_missing: bool = False,
                 bar=None, keep_features: np.ndarray | None = None) -> Scored:
    """Classify `paths` (found under `roots`) in batches decoded by `workers` processes.

    A missing or unreadable image raises ImageError naming the file and its row of `source`,
    unless `skip_missing` (then its row gets status "missing"/"unreadable" and NaN logits). An
    `Ensemble`'s logits are the log of its members' weighted mean probabilities.
    `keep_features` (a clip model's): a mask of the rows whose frame features (what its temporal
    head pools) are kept in `Scored.features`, each frame encoded once for both.
    """
    if isinstance(classifier, Ensemble):
        return _score_ensemble(classifier, paths, rows, roots, source=source, column=column, batch_size=batch_size,
                               workers=workers, skip_missing=skip_missing, bar=bar)
    n = len(paths)
    logits = torch.full((n, classifier.num_classes), float("nan"), dtype=torch.float32)
    status = np.full(n, OK, dtype=object)
    reasons: list[tuple[int, str, str]] = []
    kept: dict[int, torch.Tensor] = {}
    for batch in iter_image_batches(paths, rows, roots, transform or classifier.transform(), device=classifier.device,
                                    source=source, column=column, extra_fields=classifier.extra_fields(paths, roots),
                                    batch_size=batch_size, workers=workers, skip_missing=skip_missing):
        for index, state, message in batch.bad:
            status[index] = state
            reasons.append((index, state, message))
        if batch.images is None:
            pass
        elif keep_features is not None:
            features = classifier.frame_features(batch.images, **batch.extras)
            logits[batch.indices] = classifier.clip_logits(features[:, None])
            keep = keep_features[batch.indices.numpy()]
            kept.update(zip(batch.indices[keep].tolist(), features.cpu()[torch.from_numpy(keep)]))
        else:
            logits[batch.indices] = classifier.logits(batch.images, **batch.extras)
        if bar is not None:
            bar.update(batch.size)
    return Scored(logits=logits, status=status, reasons=reasons, features=kept)


def _score_ensemble(ensemble: Ensemble, paths, rows, roots, *, bar=None, **options) -> Scored:
    """Each group of members sharing an input pipeline scores one pass over the images."""
    probabilities, scored = None, None
    for number, group in enumerate(ensemble.groups()):
        first = group[0][0]
        part = torch.zeros((len(paths), ensemble.num_classes), dtype=torch.float32)
        status = np.full(len(paths), OK, dtype=object)
        reasons: list[tuple[int, str, str]] = []
        for batch in iter_image_batches(paths, rows, roots, first.transform(), device=first.device,
                                        extra_fields=first.extra_fields(paths, roots), **options):
            for index, state, message in batch.bad:
                status[index] = state
                reasons.append((index, state, message))
            if batch.images is not None:
                part[batch.indices] = ensemble.probabilities(group, batch.images, **batch.extras)
            if bar is not None and number == 0:
                bar.update(batch.size)
        probabilities = part if probabilities is None else probabilities + part
        scored = scored or Scored(logits=part, status=status, reasons=reasons)
    logits = ensemble.log(probabilities)
    logits[torch.from_numpy(scored.status != OK)] = float("nan")
    return Scored(logits=logits, status=scored.status, reasons=scored.reasons)


def prediction_frame(logits: torch.Tensor, status: np.ndarray, classifier: Classifier, topk: int) -> pd.DataFrame:
    """pred_class, pred_name, score, top{i}_class/_name/_prob, status; empty where not "ok"."""
    ok = status == OK
    n, k = len(ok), min(topk, classifier.num_classes)
    probs = torch.softmax(logits, dim=1)
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
    columns[STATUS_COLUMN] = status
    return pd.DataFrame(columns)


def check_inference_options(batch_size: int, topk: int, workers: int | None) -> None:
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if topk < 1:
        raise DataError(f"--topk must be at least 1, got {topk}")
    if workers is not None and workers < 0:
        raise DataError(f"--workers must be 0 or more, got {workers}")
