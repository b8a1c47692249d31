"""`clipmg embed`: a TensorBoard projector run and a 2-D map of a checkpoint's image and prompt
embeddings.

Frames are sampled (stratified by class, at most `per_class` of each, deterministic with a
seed), encoded with the checkpoint's `Classifier` (so the predicted classes are those of
test.py), and written as a projector run with thumbnails and one point per class prompt; a
static 2-D map (PCA by default, t-SNE with scikit-learn) is saved as a PNG for reports.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from clipmg import data as cdata
from clipmg.errors import DataError, ImageError
from clipmg.inference import DEFAULT_BATCH_SIZE, Classifier, image_roots
from clipmg.prompts import load_prompt_set
from clipmg.visual import (
    DEFAULT_TAG,
    DEFAULT_THUMB_SIZE,
    MAP_METHODS,
    embed_frames,
    plot_embedding_map,
    prompt_descriptions,
    stored_prompt_set,
    write_projector,
)

DEFAULT_MAX_IMAGES = 2000


def embed_checkpoint(checkpoint: str | os.PathLike, metadata: str | os.PathLike, logdir: str | os.PathLike,
                     labels=None, split: str | os.PathLike | None = None, subset: str = "val",
                     max_images: int | None = DEFAULT_MAX_IMAGES, per_class: int | None = None, seed: int = 0,
                     image_root: str | os.PathLike | None = None, columns: cdata.Columns | None = None,
                     prompts=None, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                     workers: int | None = None, skip_missing: bool = False, tag: str = DEFAULT_TAG,
                     global_step: int | None = None, thumb_size: int = DEFAULT_THUMB_SIZE,
                     map_method: str | None = "pca", map_path: str | os.PathLike | None = None,
                     classifier: Classifier | None = None) -> dict:
    """Write a TensorBoard projector run for (a stratified sample of) the frames of `metadata`
    (or `split`'s `subset`) into `logdir`, and a 2-D map PNG (`map_method` "pca", "tsne" or None;
    default file `<logdir>/embedding_map_<method>.png`). `global_step` defaults to the
    checkpoint's epoch. Returns a summary (files, counts, top1 on the sample, seconds)."""
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if map_method not in (None, *MAP_METHODS):
        raise DataError(f"unknown map method {map_method!r}; choose one of {', '.join(MAP_METHODS)} (or none)")
    for name, value in (("--max-images", max_images), ("--per-class", per_class)):
        if value is not None and value < 0:
            raise DataError(f"{name} must be 0 (no limit) or more, got {value}")
    start = time.perf_counter()
    columns = columns or cdata.Columns()
    classifier = classifier or Classifier.from_checkpoint(checkpoint, device=device, labels=labels, prompts=prompts)
    config = classifier.config
    prompt_set = load_prompt_set(prompts) if prompts else stored_prompt_set(config)
    frames, source = cdata.select_frames(metadata, classifier.label_table, split, subset, columns)
    sample = cdata.sample_frames(frames, max_images=max_images, per_class=per_class, seed=seed)
    roots = image_roots(image_root, metadata=metadata, config=config)
    emb = embed_frames(classifier, sample, roots, source=str(source), column=columns.path, thumb_size=thumb_size,
                       batch_size=batch_size, workers=workers, skip_missing=skip_missing,
                       prompt_texts=prompt_descriptions(prompt_set, classifier.class_ids, classifier.class_names))
    if not len(emb):
        raise ImageError(f"none of the {len(sample)} sampled images of {source} could be read "
                         f"(first: {emb.skipped[0][2] if emb.skipped else 'none'})")
    step = int(classifier.record.epoch or 0) if global_step is None else global_step
    logdir = Path(logdir)
    writer = SummaryWriter(str(logdir))
    try:
        written = write_projector(writer, emb, tag=tag, global_step=step)
    finally:
        writer.close()
    map_file = None
    if map_method:
        map_file = plot_embedding_map(
            emb, map_path or logdir / f"embedding_map_{map_method}.png", method=map_method, seed=seed,
            title=f"{classifier.checkpoint or checkpoint}: {len(emb)} frames of {source.name}"
                  + (f" ({subset})" if split is not None else "")
                  + f", top-1 {float(emb.correct.mean()):.3f} on these frames")
    per_class_counts = emb.frames["class_id"].value_counts().sort_index()
    return {"logdir": str(logdir), "tag": tag, "global_step": step, "tensor_name": written["tensor_name"],
            "files": {k: str(v) for k, v in written["files"].items()}, "map": str(map_file) if map_file else None,
            "n_frames": len(frames), "n_sampled": len(sample), "n_images": len(emb), "n_prompts": written["n_prompts"],
            "n_skipped": len(emb.skipped), "skipped": [m for _, _, m in emb.skipped[:20]],
            "per_class": {int(k): int(v) for k, v in per_class_counts.items()},
            "top1": float(emb.correct.mean()), "dim": int(emb.features.shape[1]),
            "sprite_tile": written["sprite_tile"], "checkpoint": str(classifier.checkpoint or checkpoint),
            "source": str(source), "seconds": time.perf_counter() - start}
