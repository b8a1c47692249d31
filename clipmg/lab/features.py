"""The lab's frames, encoded once and kept on disk beside the checkpoint.

The features (`EncodedFrames`: the model's scoring features and normalised image embeddings) are
what every answer of the lab is computed from; encoding is the one slow step, so its result is
saved in ``<run>/lab/<checkpoint>/features-<key>.safetensors`` (never inside the checkpoint
folder, which a later save replaces) and read back on the next start. The key is a hash of what
the features depend on: the checkpoint (its config.json, and the size and modification time of
its weights file, rewritten by every save), the content of the metadata and split files, the
subset, the column names and the image folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.checkpoint import hub_cache_name
from clipmg.errors import CheckpointError
from clipmg.inference import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    EncodedFrames,
    encode_frames,
    image_roots,
)
from clipmg.utils import atomic_path, logger

CACHE_VERSION = 1  # bump when what the cache file holds changes


@dataclasses.dataclass
class LabFrames:
    """The encoded frames of a lab and where they came from."""

    encoded: EncodedFrames
    roots: list[Path]  # where the frames' relative paths are found (thumbnails)
    source: str  # the metadata or split file the frames came from
    cache_file: Path | None  # None: not cached
    from_cache: bool
    seconds: float  # reading the cache, or encoding the frames


def default_lab_dir(checkpoint: Path) -> Path:
    """`<run>/lab/<checkpoint name>` beside the checkpoint, or `lab/<org>--<name>` for a
    checkpoint from the Hub (never inside the Hugging Face cache)."""
    from_hub = hub_cache_name(checkpoint)
    if from_hub:
        return Path("lab") / from_hub
    return checkpoint.parent / "lab" / checkpoint.name


def features_key(classifier: Classifier, files: list[Path], settings: dict) -> str:
    """A hash of the checkpoint, the content of `files` (metadata, split) and `settings`."""
    digest = hashlib.sha256(f"clipmg-lab-features {CACHE_VERSION}\n".encode())
    folder = classifier.checkpoint
    if folder is None:
        raise CheckpointError("the lab runs on a checkpoint folder (its features are cached beside it)")
    digest.update((folder / "config.json").read_bytes())
    for weights in sorted(folder.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    for file in files:
        digest.update(hashlib.sha256(Path(file).read_bytes()).digest())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load_frames(classifier: Classifier, metadata: str | os.PathLike, *, split: str | os.PathLike | None = None,
                subset: str = "val", image_root: str | os.PathLike | None = None,
                columns: cdata.Columns | None = None, cache_dir: str | os.PathLike | None = None,
                use_cache: bool = True, batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
                skip_missing: bool = False, adapt_bn: bool = True) -> LabFrames:
    """The frames of `metadata` (or `split`'s `subset`) encoded by `classifier` as `clipmg prompts
    evaluate` encodes them (`adapt_bn`: batch-norm statistics re-estimated on them first): read
    from the cache in `cache_dir` (default `default_lab_dir`) when it holds them, else encoded and
    saved."""
    columns = columns or cdata.Columns()
    start = time.perf_counter()
    frames, source = cdata.select_frames(metadata, classifier.label_table, split, subset, columns)
    roots = image_roots(image_root, metadata=metadata, config=classifier.config)
    files = [Path(metadata)] + ([Path(split)] if split is not None else [])
    settings = {"subset": subset if split is not None else None, "columns": dataclasses.asdict(columns),
                "roots": [str(root.resolve()) for root in roots], "classes": classifier.label_table,
                "skip_missing": skip_missing, "adapt_bn": adapt_bn}
    key = features_key(classifier, files, settings)
    folder = Path(cache_dir) if cache_dir is not None else default_lab_dir(classifier.checkpoint)
    cache_file = folder / f"features-{key[:16]}.safetensors"
    if use_cache and cache_file.is_file():
        encoded = _read(cache_file, key, classifier, frames)
        if encoded is not None:
            logger.info("lab: %d frames' features read from %s", len(encoded), cache_file)
            return LabFrames(encoded, roots, str(source), cache_file, True, time.perf_counter() - start)
    encoded = encode_frames(classifier, frames, roots, source=str(source), column=columns.path,
                            batch_size=batch_size, workers=workers, skip_missing=skip_missing,
                            adapt_bn=adapt_bn)
    if use_cache:
        _write(cache_file, key, encoded, frames)
    return LabFrames(encoded, roots, str(source), cache_file if use_cache else None, False,
                     time.perf_counter() - start)


def _write(path: Path, key: str, encoded: EncodedFrames, frames: pd.DataFrame) -> None:
    from safetensors.torch import save_file

    kept = _kept_positions(encoded, frames)
    meta = {"key": key, "n_frames": str(len(frames)), "seconds": str(encoded.seconds),
            "skipped": json.dumps(encoded.skipped)}
    tensors = {"scoring": encoded.scoring.float().contiguous(),
               "embeddings": torch.from_numpy(np.ascontiguousarray(encoded.embeddings)),
               "logits": torch.from_numpy(np.ascontiguousarray(encoded.logits)),
               "kept": torch.from_numpy(kept.astype(np.int64))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    logger.info("lab: features of %d frames saved to %s", len(encoded), path)


def _kept_positions(encoded: EncodedFrames, frames: pd.DataFrame) -> np.ndarray:
    """Positions in `frames` of the encoded frames (those that could be read), in order."""
    skipped = {position for position, _, _ in encoded.skipped}
    return np.array([i for i in range(len(frames)) if i not in skipped], dtype=np.int64)


def _read(path: Path, key: str, classifier: Classifier, frames: pd.DataFrame) -> EncodedFrames | None:
    """The cached features, or None (with a warning) when the file is damaged or not these frames'."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in ("scoring", "embeddings", "logits", "kept")}
    except Exception as error:  # safetensors raises its own types for damaged files
        logger.warning("lab: cannot read %s (%s); encoding the frames again", path, error)
        return None
    if meta.get("key") != key or int(meta.get("n_frames", -1)) != len(frames):
        logger.warning("lab: %s holds other frames' features; encoding the frames again", path)
        return None
    kept = tensors["kept"].numpy()
    chosen = frames.iloc[kept].reset_index(drop=True)
    index_of = {cid: i for i, cid in enumerate(classifier.class_ids)}
    targets = np.array([index_of.get(int(c), -1) for c in chosen["class_id"]], dtype=np.int64)
    skipped = [tuple(item) for item in json.loads(meta.get("skipped", "[]"))]
    return EncodedFrames(scoring=tensors["scoring"], embeddings=tensors["embeddings"].numpy(),
                         logits=tensors["logits"].numpy(), targets=targets, frames=chosen, skipped=skipped,
                         seconds=float(meta.get("seconds", 0.0)))
