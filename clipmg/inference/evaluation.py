"""Metrics of a checkpoint on the frames of a metadata file or a split (`clipmg evaluate`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.errors import ImageError
from clipmg.inference.batches import DEFAULT_BATCH_SIZE, image_roots
from clipmg.inference.classifier import Classifier
from clipmg.inference.clips import ClipCollector, plan_from_frames
from clipmg.inference.predict_csv import DEFAULT_TOPK, MAX_LISTED_SKIPS
from clipmg.inference.scoring import check_inference_options, prediction_frame, score_images
from clipmg.metrics import write_report
from clipmg.utils import atomic_output, progress


def default_eval_dir(checkpoint: Path) -> Path:
    """`<run>/eval/<checkpoint name>`: beside the checkpoint, never inside it (a later save
    of the checkpoint replaces its folder)."""
    return checkpoint.parent / "eval" / checkpoint.name


def evaluate_checkpoint(checkpoint: str | os.PathLike, metadata: str | os.PathLike, labels=None,
                        split: str | os.PathLike | None = None, subset: str = "val",
                        out_dir: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                        columns: cdata.Columns | None = None, prompts=None,
                        batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                        workers: int | None = None, skip_missing: bool = False, topk: int = DEFAULT_TOPK,
                        classifier: Classifier | None = None) -> dict:
    """Metrics of a checkpoint on the frames of `metadata` (or of `split`'s `subset`: "train",
    "val" or "all"). Writes metrics.json, per_class.csv, confusion.csv, confusion.png,
    predictions.csv and clip_predictions.csv (one row per clip, as test.py writes it) into
    `out_dir` (default `<run>/eval/<checkpoint name>`); returns the metrics (with `n_images`,
    `n_skipped`, `images_per_s`, `out_dir`; a clip model's own clip figures as `clip_model_*`)."""
    check_inference_options(batch_size, topk, workers)
    columns = columns or cdata.Columns()
    classifier = classifier or Classifier.from_checkpoint(checkpoint, device=device, labels=labels, prompts=prompts)
    frames, source = cdata.select_frames(metadata, classifier.label_table, split, subset, columns)
    roots = image_roots(image_root, metadata=metadata, config=classifier.config)
    index_of = {cid: i for i, cid in enumerate(classifier.class_ids)}
    targets = torch.tensor([index_of[int(c)] for c in frames["class_id"]], dtype=torch.long)
    clips = ClipCollector(plan_from_frames(frames, targets.numpy(), classifier.clip_frames), classifier)
    start = time.perf_counter()
    with progress(total=len(frames), desc="evaluate", unit="img") as bar:
        scored = score_images(classifier, frames["path"].to_numpy(), frames["row"].to_numpy(), roots,
                              source=str(source), column=columns.path, batch_size=batch_size, workers=workers,
                              skip_missing=skip_missing, bar=bar, keep_features=clips.plan.wanted(0, len(frames)))
    clips.add(0, clips.plan.codes(frames["video_id"].to_numpy()), scored)
    seconds = time.perf_counter() - start
    ok = scored.ok
    if not ok.any():
        raise ImageError(f"none of the {len(frames)} images of {source} could be read "
                         f"(first: {scored.reasons[0][2]})")
    checkpoint_folder = classifier.checkpoint or Path(checkpoint)
    out = Path(out_dir) if out_dir is not None else default_eval_dir(checkpoint_folder)
    paths = {"metrics": out / "metrics.json", "per_class": out / "per_class.csv",
             "confusion": out / "confusion.csv", "confusion_png": out / "confusion.png"}
    keep = torch.from_numpy(ok)
    metrics = write_report(
        scored.logits[keep], targets[keep], classifier.class_names, paths, class_ids=classifier.class_ids,
        clip_ids=frames["video_id"].to_numpy()[ok], clip_model=clips.model_metrics_input(),
        extra={"n_skipped": int((~ok).sum()), "seconds": seconds, "images_per_s": int(ok.sum()) / seconds,
               "checkpoint": str(checkpoint_folder), "metadata": str(metadata),
               "split": str(split) if split is not None else None,
               "subset": subset if split is not None else None, "out_dir": str(out)})
    standard = [c for c in ("path", "class_id", "video_id", "frame_id", "caption", "row") if c in frames]
    predictions = pd.concat([frames[standard], prediction_frame(scored.logits, scored.status, classifier, topk)], axis=1)
    with atomic_output(out / "predictions.csv") as handle:
        predictions.to_csv(handle, index=False, float_format="%.6f", lineterminator="\n")
    with atomic_output(out / "clip_predictions.csv") as handle:
        clips.table(topk, "video_id", labelled=True).to_csv(handle, index=False, float_format="%.6f",
                                                            lineterminator="\n")
    if scored.reasons:
        metrics["skipped"] = [{"row": int(frames["row"].iat[i]), "status": state, "reason": message}
                              for i, state, message in scored.reasons[:MAX_LISTED_SKIPS]]
    return metrics
