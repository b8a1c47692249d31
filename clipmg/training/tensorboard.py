"""What the trainer writes to TensorBoard: learning rates and the temperature every step, losses
and metrics every epoch, the validation confusion matrix at each epoch that improves best/ and at
the last, and projector points of a fixed sample of validation frames every `embed_every` epochs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from clipmg.data import sample_frames
from clipmg.inference import DEFAULT_BATCH_SIZE, Classifier
from clipmg.metrics import confusion, plot_confusion
from clipmg.prompts import PromptSet
from clipmg.visual import embed_frames, prompt_descriptions, write_projector


def log_step(writer, step: int, optimizer: torch.optim.Optimizer, scale: float) -> None:
    for i, group in enumerate(optimizer.param_groups):
        writer.add_scalar(f"lr/{group.get('name', i)}", group["lr"], step)
    writer.add_scalar("train/logit_scale", scale, step)


def log_epoch(writer, epoch: int, train_stats: dict, metrics: dict) -> None:
    for key, value in train_stats.items():
        writer.add_scalar(f"train/{key}", value, epoch)
    for key, value in metrics.items():
        writer.add_scalar(f"val/{key}", value, epoch)


def log_confusions(writer, validations: dict, class_names: Sequence[str], class_ids: Sequence[int]) -> None:
    """The confusion images of a run, drawn once at its end: `validations` maps epochs (best/'s and
    the last) to their validation (logits, targets, ...), None where it is not at hand (best/'s
    epoch before a resume). Drawing one costs more than validating a small validation set, and on
    a noisy one best/ improves at most epochs, so they are not drawn as training goes."""
    for epoch in sorted(e for e, validation in validations.items() if validation is not None):
        log_confusion(writer, *validations[epoch], class_names, epoch, class_ids=class_ids)


def log_confusion(writer, logits: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str], step: int,
                  tag: str = "val/confusion", class_ids: Sequence[int] | None = None) -> None:
    """The row-normalised confusion matrix (as `clipmg evaluate` draws it) as a TensorBoard image."""
    logits, targets = torch.as_tensor(logits).float(), torch.as_tensor(targets).long()
    cm = confusion(logits, targets, len(class_names))
    ticks = [f"{cid}: {name}" for cid, name in zip(class_ids or range(len(class_names)), class_names)]
    correct = int(np.trace(cm))
    title = f"step {step}: {len(targets)} frames, top1 {correct / max(1, len(targets)):.3f}"
    with tempfile.TemporaryDirectory(prefix="clipmg-confusion-") as folder:
        png = plot_confusion(cm, ticks, Path(folder) / "confusion.png", title=title)
        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))
    writer.add_image(tag, pixels, step, dataformats="HWC")


def log_validation_projector(writer, model, class_ids: Sequence[int], class_names: Sequence[str],
                             prompt_set: PromptSet | None, frames: pd.DataFrame, image_root: str | os.PathLike,
                             step: int, max_images: int = 500, seed: int = 0, workers: int = 0,
                             batch_size: int = DEFAULT_BATCH_SIZE, tag: str = "val",
                             preprocess: dict | None = None) -> dict:
    """Projector points for a fixed sample of validation frames (the same every call: it depends
    only on `frames` and `seed`), at `step`. Unreadable images are left out."""
    was_training = model.training
    classifier = Classifier.from_model(model, class_ids, class_names, prompt_set, preprocess=preprocess)
    try:
        sample = sample_frames(frames, max_images=max_images, seed=seed)
        emb = embed_frames(classifier, sample, [Path(image_root)], source="validation frames",
                           batch_size=batch_size, workers=workers, skip_missing=True,
                           prompt_texts=prompt_descriptions(prompt_set, class_ids, class_names), desc="projector")
        return write_projector(writer, emb, tag=tag, global_step=step)
    finally:
        model.train(was_training)
