"""Class counts and class-balanced sampling for the (very imbalanced) iMiGUE classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler

SAMPLER_MODES = ("inverse", "sqrt")


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
        raise ValueError(f"unknown sampler mode {mode!r}; use one of {', '.join(SAMPLER_MODES)}")
    indices = np.asarray(class_indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("cannot balance an empty set of samples")
    _, inverse, counts = np.unique(indices, return_inverse=True, return_counts=True)
    per_sample = counts[inverse].astype(np.float64)
    return 1.0 / per_sample if mode == "inverse" else 1.0 / np.sqrt(per_sample)


def make_class_balanced_sampler(
    class_indices: Sequence[int] | np.ndarray,
    mode: str = "inverse",
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """A sampler (with replacement) drawing `num_samples` (default: all) samples per epoch."""
    weights = balanced_sample_weights(class_indices, mode)
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=len(weights) if num_samples is None else int(num_samples),
        replacement=True,
        generator=generator,
    )
