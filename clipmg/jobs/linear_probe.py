"""Linear probe: a multinomial logistic-regression head on frozen image embeddings of a
contrastive checkpoint (`clipmg probe`).

The train and validation frames of a split are encoded once (normalised embeddings, as the
zero-shot classifier sees them) and cached in the output folder (`features.safetensors`); the head
is then fitted in seconds by full-batch L-BFGS on mean cross-entropy + `l2 * ||W||^2` (optionally
class-weighted). The result is written as an ordinary checkpoint: the contrastive image tower plus
the linear head (`SupervisedModel` with backbone "clip"), so test.py, predict and evaluate use it
unchanged, and `clipmg train --head linear --init-from <probe>` can fine-tune it (LP-FT).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clipmg import data as cdata
from clipmg.checkpoint import WEIGHTS, CheckpointRecord, save_checkpoint
from clipmg.errors import CheckpointError, DataError, ModelError
from clipmg.inference import DEFAULT_BATCH_SIZE, Classifier, encode_frames, image_roots
from clipmg.losses import CLASS_WEIGHTINGS, class_weights_from_counts, classification_loss
from clipmg.metrics import compute_metrics
from clipmg.models import SupervisedModel
from clipmg.utils import atomic_path, logger

FEATURES_FILE = "features.safetensors"
CHECKPOINT_DIR = "checkpoint"
DEFAULT_L2 = 1e-4
DEFAULT_MAX_ITER = 500
SUBSETS = ("train", "val")


# --------------------------------------------------------------------------------- fitting
def fit_linear_head(features: torch.Tensor, targets: torch.Tensor, num_classes: int, l2: float = DEFAULT_L2,
                    class_weights: torch.Tensor | None = None, max_iter: int = DEFAULT_MAX_ITER
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (C, D), bias (C,)) minimising mean cross-entropy + `l2 * ||weight||^2` (the bias is
    not penalised, as in sklearn's LogisticRegression with C = 1 / (2 n l2)), by full-batch L-BFGS
    in float64."""
    if l2 < 0:
        raise DataError(f"l2 must be 0 or more, got {l2}")
    if len(features) == 0:
        raise DataError("the linear probe has no training frames")
    x = features.double()
    y = targets.long()
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    class_weights = None if class_weights is None else class_weights.double()

    def closure():
        optimizer.zero_grad()
        loss = classification_loss(x @ weight.T + bias, y, class_weights) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().float(), bias.detach().float()


# ------------------------------------------------------------------------------- features
def _cache_key(checkpoint: Path, split: Path, image_roots: list[Path]) -> dict[str, str]:
    """What the cached features depend on: the checkpoint's weights and the split file."""
    weights, split_stat = (checkpoint / WEIGHTS).stat(), split.stat()
    return {"checkpoint": str(checkpoint.resolve()), "weights_mtime_ns": str(weights.st_mtime_ns),
            "weights_bytes": str(weights.st_size), "split": str(split.resolve()),
            "split_mtime_ns": str(split_stat.st_mtime_ns), "image_roots": ";".join(map(str, image_roots))}


def _read_cache(path: Path, key: dict[str, str]) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            if handle.metadata() != key:
                return None
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        logger.warning("ignoring an unreadable feature cache %s: %s", path, error)
        return None


def encode_split(classifier: Classifier, split: Path, roots: list[Path], columns: cdata.Columns,
                 batch_size: int, workers: int | None) -> dict[str, torch.Tensor]:
    """`{subset}_features` (n, D) normalised embeddings, `{subset}_targets`, `{subset}_clips` (codes)."""
    tensors = {}
    for subset in SUBSETS:
        frames, source = cdata.select_frames(split, classifier.label_table, split, subset, columns)
        emb = encode_frames(classifier, frames, roots, source=str(source), column=columns.path,
                            batch_size=batch_size, workers=workers, desc=f"encode {subset}")
        tensors[f"{subset}_features"] = torch.from_numpy(emb.embeddings)
        tensors[f"{subset}_targets"] = torch.from_numpy(emb.targets)
        tensors[f"{subset}_clips"] = torch.from_numpy(
            np.unique(emb.frames["video_id"].astype(str).to_numpy(), return_inverse=True)[1].astype(np.int64))
    return tensors


def cached_features(classifier: Classifier, split: Path, roots: list[Path], columns: cdata.Columns, out_dir: Path,
                    batch_size: int, workers: int | None) -> tuple[dict[str, torch.Tensor], bool]:
    """The split's encoded frames, from `out_dir/features.safetensors` when it was made from the
    same checkpoint weights and split file; (tensors, whether the cache was used)."""
    path = out_dir / FEATURES_FILE
    key = _cache_key(classifier.checkpoint, split, roots)
    tensors = _read_cache(path, key)
    if tensors is not None:
        return tensors, True
    tensors = encode_split(classifier, split, roots, columns, batch_size, workers)
    with atomic_path(path) as staging:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging), metadata=key)
    return tensors, False


# -------------------------------------------------------------------------------- probe
def probe_checkpoint(checkpoint: str | os.PathLike, split: str | os.PathLike, out_dir: str | os.PathLike, *,
                     labels=None, image_root: str | os.PathLike | None = None, columns: cdata.Columns | None = None,
                     l2: float = DEFAULT_L2, class_weighting: str = "none", max_iter: int = DEFAULT_MAX_ITER,
                     batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", workers: int | None = None) -> dict:
    """Fit a linear probe on the frozen embeddings of `checkpoint` (a contrastive model) for the
    train frames of `split`, and write `out_dir/checkpoint/` (tower + head). Returns a summary with
    the validation `metrics` (the same figures evaluate gives on that checkpoint), `checkpoint`,
    `seconds` (fit only), `encode_seconds` and `cached`."""
    if class_weighting not in CLASS_WEIGHTINGS:
        raise DataError(f"unknown class weighting {class_weighting!r}; use one of {', '.join(CLASS_WEIGHTINGS)}")
    split, out_dir, columns = Path(split), Path(out_dir), columns or cdata.Columns()
    if not split.is_file():
        raise DataError(f"split file not found: {split} (make one with `clipmg split`, or use a run's split.csv)")
    classifier = Classifier.from_checkpoint(checkpoint, device=device, labels=labels)
    if classifier.model.has_classifier_head:
        raise ModelError(f"{classifier.checkpoint} already has a linear class head; the probe needs a contrastive "
                         "image-text checkpoint (its image embeddings are what the probe fits on)")
    roots = image_roots(image_root, metadata=split, config=classifier.config)
    start = time.perf_counter()
    tensors, cached = cached_features(classifier, split, roots, columns, out_dir, batch_size, workers)
    encode_seconds = time.perf_counter() - start
    num_classes = classifier.num_classes
    weights = class_weights_from_counts(torch.bincount(tensors["train_targets"], minlength=num_classes),
                                        class_weighting)
    start = time.perf_counter()
    weight, bias = fit_linear_head(tensors["train_features"], tensors["train_targets"], num_classes, l2=l2,
                                   class_weights=weights, max_iter=max_iter)
    seconds = time.perf_counter() - start
    val_logits = tensors["val_features"] @ weight.T + bias
    metrics = compute_metrics(val_logits, tensors["val_targets"], clip_ids=tensors["val_clips"].numpy(),
                              num_classes=num_classes)
    train_top1 = float(((tensors["train_features"] @ weight.T + bias).argmax(1) == tensors["train_targets"])
                       .float().mean())
    probe = {"l2": l2, "class_weighting": class_weighting, "max_iter": max_iter, "seconds": seconds,
             "train_top1": train_top1, "n_train": len(tensors["train_targets"]), "source": str(classifier.checkpoint)}
    folder = save_probe(classifier, weight, bias, out_dir / CHECKPOINT_DIR, metrics, probe, split)
    logger.info("linear probe on %d frames in %.1f s: val top-1 %.3f", probe["n_train"], seconds, metrics["top1"])
    return {"checkpoint": str(folder), "metrics": metrics, "seconds": seconds, "encode_seconds": encode_seconds,
            "cached": cached, "features": str(out_dir / FEATURES_FILE), "probe": probe}


def save_probe(classifier: Classifier, weight: torch.Tensor, bias: torch.Tensor, folder: Path, metrics: dict,
               probe: dict, split: Path) -> Path:
    """The contrastive tower + the fitted head as a checkpoint test.py can use."""
    model = SupervisedModel.wrap(classifier.model, classifier.num_classes)
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    source = classifier.record
    train_config = {**source.train, "head": "linear", "init_from": str(classifier.checkpoint),
                    "freeze_image": True, "split": str(split)}
    record = CheckpointRecord(class_ids=classifier.class_ids, class_names=classifier.class_names,
                              prompts=source.prompts or {}, preprocess=classifier.preprocess, train=train_config,
                              metrics=metrics, probe=probe, split={"source": str(split)})
    try:
        return save_checkpoint(folder, model, record)
    except OSError as error:
        raise CheckpointError(f"cannot write the probe checkpoint {folder}: {error}") from error
