"""Class counts, class-balanced sample weights and stratified subsamples, for the (very
imbalanced) iMiGUE classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clipmg.errors import DataError

SAMPLER_MODES = ("inverse", "sqrt")
#: the trainer's `--balanced-sampler`: off, or one of the modes
BALANCED_SAMPLERS = ("none", *SAMPLER_MODES)


def class_counts(df: pd.DataFrame | pd.Series) -> pd.Series:
    """Frames per class id, sorted by id (a DataFrame's `class_id` column, or a Series)."""
    ids = df["class_id"] if isinstance(df, pd.DataFrame) else df
    return ids.value_counts().sort_index().rename("frames")


def balanced_sample_weights(
    class_indices: Sequence[int] | np.ndarray, mode: str = "inverse"
) -> np.ndarray:
    """One weight per sample: 1/count of its class ("inverse", every class equally likely)
    or 1/sqrt(count) ("sqrt", a milder rebalancing)."""
    if mode not in SAMPLER_MODES:
        raise DataError(f"unknown sampler mode {mode!r}; use one of {', '.join(SAMPLER_MODES)}")
    indices = np.asarray(class_indices, dtype=np.int64)
    if indices.size == 0:
        raise DataError("cannot balance an empty set of samples")
    _, inverse, counts = np.unique(indices, return_inverse=True, return_counts=True)
    per_sample = counts[inverse].astype(np.float64)
    return 1.0 / per_sample if mode == "inverse" else 1.0 / np.sqrt(per_sample)


def sample_frames(frames: pd.DataFrame, max_images: int | None = None, per_class: int | None = None,
                  seed: int = 0, class_column: str = "class_id") -> pd.DataFrame:
    """At most `max_images` frames, stratified by class: every class keeps min(its frames, cap)
    frames, the cap being `per_class` or else the largest one that fits `max_images` (the slots
    left below the next cap go to randomly chosen larger classes), so rare classes keep all
    their frames. Frames are drawn at random with `seed`; the result keeps the input order
    (and index). None or 0 means no limit."""
    if frames.empty:
        return frames
    rng = np.random.default_rng(seed)
    classes = frames[class_column].to_numpy()
    ids, counts = np.unique(classes, return_counts=True)
    take = counts.copy()
    if per_class:
        take = np.minimum(take, per_class)
    if max_images and take.sum() > max_images:
        cap = _largest_cap(take, max_images)
        quota = np.minimum(take, cap)
        spare = max_images - int(quota.sum())
        larger = np.flatnonzero(take > cap)
        quota[rng.choice(larger, size=spare, replace=False)] += 1  # spare < len(larger) by the cap's choice
        take = quota
    chosen = []
    for class_id, n in zip(ids, take):
        positions = np.flatnonzero(classes == class_id)
        chosen.append(positions if n == len(positions) else rng.choice(positions, size=int(n), replace=False))
    return frames.iloc[np.sort(np.concatenate(chosen))]


def _largest_cap(counts: np.ndarray, budget: int) -> int:
    """The largest c with sum(min(counts, c)) <= budget."""
    low, high = 0, int(counts.max())
    while low < high:
        middle = (low + high + 1) // 2
        if np.minimum(counts, middle).sum() <= budget:
            low = middle
        else:
            high = middle - 1
    return low
