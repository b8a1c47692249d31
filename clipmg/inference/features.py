"""Encode frames once: what the model scores, its image embeddings and the classifier's logits.

`encode_frames` feeds every job that looks at frames as a whole rather than row by row: the
projector and 2-D maps (`clipmg embed`), prompt experiments (each prompt set rescored on the same
features), learned prompts and the linear probe. Each batch runs the image tower once; logits and
embeddings both come from the model's `scoring_features`, so they are those of test.py whatever
the model (a hand-crop model's logits are its max-over-crops scores, not a plain dot product).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg.errors import ImageError
from clipmg.inference.adapt import adapt_classifier
from clipmg.inference.batches import DEFAULT_BATCH_SIZE, iter_image_batches
from clipmg.inference.classifier import Classifier
from clipmg.utils import logger, progress


@dataclass
class EncodedFrames:
    """Frames that could be read, encoded by one classifier."""

    scoring: torch.Tensor  # (n, ...) float32 CPU: the model's scoring_features (rescored per prompt set)
    embeddings: np.ndarray  # (n, D) float32, normalised image embeddings
    logits: np.ndarray  # (n, C) float32, the classifier's logits
    targets: np.ndarray  # (n,) class index, -1 where the class is not the classifier's
    frames: pd.DataFrame  # the n frames read (path, class_id, video_id, ...), index 0..n-1
    thumbnails: np.ndarray | None = None  # (n, S, S, 3) uint8
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (position in input, status, message)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def clip_ids(self) -> np.ndarray:
        return self.frames["video_id"].to_numpy()


@torch.inference_mode()
def encode_frames(classifier: Classifier, frames: pd.DataFrame, roots: Sequence[Path], *, source: str = "metadata",
                  column: str = "Path", thumb_size: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                  workers: int | None = None, skip_missing: bool = False, desc: str = "encode images",
                  require_any: bool = True, adapt_bn: bool = False) -> EncodedFrames:
    """Encode the images of `frames` (standard columns: path, class_id, ...; found under `roots`).

    A missing or unreadable image raises ImageError naming it, unless `skip_missing` (then it is
    left out and listed in `skipped`). With `require_any`, no readable image at all is an error.
    `adapt_bn`: first re-estimate the batch-norm statistics on these frames, as test.py does
    (`clipmg.inference.adapt`).
    """
    start = time.perf_counter()
    frames = frames.reset_index(drop=True)
    paths = frames["path"].astype(str).to_numpy()
    rows = frames["row"].to_numpy() if "row" in frames else np.arange(2, len(frames) + 2)
    if adapt_bn:
        adapt_classifier(classifier, paths, rows, roots, source=source, column=column, batch_size=batch_size,
                         workers=workers)
    scoring, positions, thumbs, skipped = [], [], [], []
    batches = iter_image_batches(paths, rows, roots, classifier.transform(), device=classifier.device, source=source,
                                 column=column, extra_fields=classifier.extra_fields(paths, roots),
                                 batch_size=batch_size, workers=workers, skip_missing=skip_missing,
                                 thumb_size=thumb_size, then="leave those frames out")
    with progress(total=len(frames), desc=desc, unit="img") as bar:
        for batch in batches:
            skipped += batch.bad
            if batch.images is not None:
                scoring.append(classifier.scoring_features(batch.images, **batch.extras))
                positions.append(batch.indices)
                if batch.thumbs is not None:
                    thumbs.append(batch.thumbs)
            bar.update(batch.size)
    if skipped:
        logger.warning("%d of %d images could not be read and are left out, e.g. %s", len(skipped), len(frames),
                       skipped[0][2])
    if require_any and not scoring:
        first = skipped[0][2] if skipped else "no frames given"
        raise ImageError(f"none of the {len(frames)} images of {source} could be read (first: {first})")
    return _assemble(classifier, frames, scoring, positions, thumbs, skipped, time.perf_counter() - start)


def _assemble(classifier: Classifier, frames: pd.DataFrame, scoring: list, positions: list, thumbs: list,
              skipped: list, seconds: float) -> EncodedFrames:
    model = classifier.model
    kept = torch.cat(positions).numpy() if positions else np.zeros(0, dtype=np.int64)
    if scoring:
        features = torch.cat(scoring)
        embeddings = model.embedding_from_features(features).float().cpu().numpy()
        logits = classifier.logits_from_features(features).numpy()
        features = features.cpu()
    else:
        features = torch.zeros(0)
        embeddings = np.zeros((0, 0), dtype=np.float32)
        logits = np.zeros((0, classifier.num_classes), dtype=np.float32)
    index_of = {cid: i for i, cid in enumerate(classifier.class_ids)}
    targets = np.array([index_of.get(int(c), -1) for c in frames["class_id"].to_numpy()[kept]], dtype=np.int64)
    return EncodedFrames(scoring=features, embeddings=embeddings.astype(np.float32), logits=logits.astype(np.float32),
                         targets=targets, frames=frames.iloc[kept].reset_index(drop=True),
                         thumbnails=np.concatenate(thumbs) if thumbs else None, skipped=skipped, seconds=seconds)
