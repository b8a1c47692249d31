"""Frames as points in the image-text space, with what the classifier made of them, and the
class points (prompt embeddings, or a linear head's weight rows) in the same space: what the
TensorBoard projector and the 2-D maps draw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg.checkpoint import CheckpointRecord, as_record
from clipmg.inference import DEFAULT_BATCH_SIZE, Classifier, encode_frames
from clipmg.prompts import PromptSet

DEFAULT_THUMB_SIZE = 64


@dataclass
class Embeddings:
    """Image embeddings of some frames, with what the classifier made of them, and the class
    prompt embeddings of the same space."""

    features: np.ndarray  # (n, D) float32, normalised image embeddings
    logits: np.ndarray  # (n, C) float32, scale * features @ class_embeddings.T
    targets: np.ndarray  # (n,) class index, -1 where unknown
    frames: pd.DataFrame  # the n frames embedded (path, class_id, video_id, frame_id, ...), index 0..n-1
    class_ids: list[int]
    class_names: list[str]
    class_embeddings: np.ndarray  # (C, D) float32, normalised
    prompt_texts: list[str] = field(default_factory=list)  # one description per class (may be empty)
    thumbnails: np.ndarray | None = None  # (n, S, S, 3) uint8
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (position in input, status, message)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1) if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.targets

    @property
    def scores(self) -> np.ndarray:
        """Softmax probability of the predicted class."""
        if not len(self):
            return np.zeros(0, dtype=np.float32)
        return torch.softmax(torch.from_numpy(self.logits), dim=1).max(dim=1).values.numpy()


def prompt_descriptions(prompt_set: PromptSet | None, class_ids: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """One line per class saying which prompts its embedding averages (for a learned set: how
    many learned context vectors precede the class text)."""
    prompt_set = prompt_set or PromptSet()
    learned = int(getattr(prompt_set, "n_ctx", 0) or 0)
    lines = []
    for cid, name in zip(class_ids, class_names):
        texts = prompt_set.texts_for(name, cid)
        line = texts[0] + (f" (+{len(texts) - 1} more templates)" if len(texts) > 1 else "")
        lines.append(f"[{learned} learned context vectors] {line}" if learned else line)
    return lines


def stored_prompt_set(config: CheckpointRecord | Mapping) -> PromptSet:
    """The prompt set of a checkpoint's config, for describing its prompt points only (the points
    themselves are the Classifier's class embeddings): templates and descriptions, and for a
    learned set (``"type": "learned"``) its number of context vectors, without loading them."""
    data = dict(as_record(config).prompts or {})
    prompt_set = PromptSet.from_dict({k: v for k, v in data.items() if k in ("name", "templates", "descriptions")})
    prompt_set.n_ctx = int(data.get("n_ctx") or 0) if data.get("type") == "learned" else 0
    return prompt_set


def embed_frames(classifier: Classifier, frames: pd.DataFrame, roots: Sequence[Path], *, source: str = "metadata",
                 column: str = "Path", thumb_size: int | None = DEFAULT_THUMB_SIZE,
                 batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, skip_missing: bool = False,
                 prompt_texts: Sequence[str] | None = None, desc: str = "embed") -> Embeddings:
    """Encode the images of `frames` (standard columns: path, class_id, ...; found under `roots`)
    with `classifier` (see `clipmg.inference.encode_frames`); an empty result when none could be read."""
    encoded = encode_frames(classifier, frames, roots, source=source, column=column, thumb_size=thumb_size,
                            batch_size=batch_size, workers=workers, skip_missing=skip_missing, desc=desc,
                            require_any=False)
    points = class_embedding_points(classifier)
    features = encoded.embeddings if len(encoded) else np.zeros((0, points.shape[1]), dtype=np.float32)
    return Embeddings(features=features, logits=encoded.logits, targets=encoded.targets, frames=encoded.frames,
                      class_ids=list(classifier.class_ids), class_names=list(classifier.class_names),
                      class_embeddings=points.float().cpu().numpy(), prompt_texts=list(prompt_texts or []),
                      thumbnails=encoded.thumbnails, skipped=encoded.skipped)


def class_embedding_points(classifier: Classifier) -> torch.Tensor:
    """(C, D) class points shown beside the frames: the prompt embeddings, or for a model with a
    linear class head (whose features are what `encode_image` gives) its normalised weight rows."""
    if classifier.class_embeddings is not None:
        return classifier.class_embeddings
    return torch.nn.functional.normalize(classifier.model.classifier.weight.detach().float(), dim=-1)
