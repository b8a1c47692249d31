"""Test-time adaptation of batch-norm statistics (AdaBN: Li et al. 2016; Schneider et al. 2020).

A tower with batch norm normalises each layer by the mean and variance it saw in training. Frames
of another session, camera or person can sit elsewhere (brightness, contrast, scale), and then
every layer is normalised with the wrong statistics. Before classifying, the statistics are
re-estimated on a sample of the frames to classify: their pixels only, never their labels. The
weights are untouched; a model without batch norm (a ViT) is left as it is.

The price: a frame's prediction depends on the other frames of its run (through these
statistics). With fewer than `MIN_FRAMES` frames the training statistics are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from clipmg.inference.batches import DEFAULT_BATCH_SIZE, iter_image_batches
from clipmg.inference.classifier import Classifier
from clipmg.inference.ensemble import Ensemble
from clipmg.utils import logger

MIN_FRAMES = 32  # fewer: the estimate is too noisy to beat the training statistics
MAX_FRAMES = 512  # a seeded sample of this many frames is enough for the statistics
SAMPLE_SEED = 0


def batch_norm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The model's batch-norm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def sample_indices(n: int, limit: int = MAX_FRAMES, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Sorted indices of at most `limit` of `n` items, the same for the same (n, limit, seed)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@torch.no_grad()
def adapt_batch_norm(model: nn.Module, batches: Iterable, forward: Callable[[object], object],
                     size: Callable[[object], int] = len, min_frames: int = MIN_FRAMES) -> int:
    """Replace the running statistics of `model`'s batch-norm layers by those of `batches` (each
    passed to `forward`; `size` gives its number of frames): the plain average over the
    batches, the rest of the model in eval mode. Returns the frames used; 0 (statistics
    unchanged) when the model has no batch norm or fewer than `min_frames` frames came."""
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    saved = [(layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone(),
              layer.momentum, layer.training) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average: every batch counts the same
        layer.train()
    seen = 0
    try:
        for batch in batches:
            if size(batch) < 2:  # a batch of one has no variance
                continue
            forward(batch)
            seen += size(batch)
    finally:
        keep = seen >= min_frames
        for layer, (mean, var, count, momentum, training) in zip(layers, saved):
            layer.momentum = momentum
            layer.train(training)
            if not keep:
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
                layer.num_batches_tracked.copy_(count)
    return seen if keep else 0


def adapt_classifier(classifier: Classifier | Ensemble, paths: Sequence[str], rows: Sequence[int],
                     roots: Sequence[Path], *, source: str, column: str = "Path", n_frames: int | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None) -> int:
    """Re-estimate the batch-norm statistics of `classifier` (every member of an ensemble) on a
    seeded sample of at most `MAX_FRAMES` of the images at `paths` (rows `rows` of `source`;
    unreadable ones are left out here, scoring reports them). `n_frames`: how many frames will be
    classified, when `paths` is already a sample of them. Logs what it did; returns the frames
    used (0: the training statistics are kept)."""
    members = classifier.members if isinstance(classifier, Ensemble) else [classifier]
    members = [m for m in members if batch_norm_layers(m.model)]
    n_frames = len(paths) if n_frames is None else n_frames
    if not members:
        return 0
    if n_frames < MIN_FRAMES:
        logger.info("batch-norm statistics: the training ones (%d frames to classify; test-time adaptation "
                    "needs %d)", n_frames, MIN_FRAMES)
        return 0
    pick = sample_indices(len(paths))
    paths, rows = [paths[i] for i in pick], [rows[i] for i in pick]
    used = 0
    for member in members:
        batches = iter_image_batches(paths, rows, roots, member.transform(), device=member.device, source=source,
                                     column=column, extra_fields=member.extra_fields(paths, roots),
                                     batch_size=max(batch_size, 2), workers=workers, skip_missing=True)
        used = adapt_batch_norm(member.model, batches,
                                lambda batch, m=member: m.scoring_features(batch.images, **batch.extras),
                                size=lambda batch: 0 if batch.images is None else len(batch.images))
    if used:
        logger.info("batch-norm statistics re-estimated on %d of the %d frames to classify (test-time "
                    "adaptation, pixels only; --no-adapt-bn keeps the training statistics)", used, n_frames)
    else:
        logger.info("batch-norm statistics: the training ones (fewer than %d of the frames to classify "
                    "could be read)", MIN_FRAMES)
    return used
