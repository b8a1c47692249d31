"""Metrics of a checkpoint on the frames of a metadata file or a split (`clipmg evaluate`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.checkpoint import hub_cache_name
from clipmg.errors import ImageError
from clipmg.inference.adapt import adapt_classifier
from clipmg.inference.batches import DEFAULT_BATCH_SIZE, image_roots
from clipmg.inference.classifier import Classifier
from clipmg.inference.clips import ClipCollector, plan_from_frames
from clipmg.inference.ensemble import Ensemble, load_classifier, output_name
from clipmg.inference.gallery import MisclassifiedGallery
from clipmg.inference.predict_csv import DEFAULT_TOPK, MAX_LISTED_SKIPS
from clipmg.inference.scoring import check_inference_options, prediction_frame, score_images
from clipmg.metrics import write_report
from clipmg.outputs import check_output_file, check_output_folder, output_errors
from clipmg.utils import atomic_output, progress


def default_eval_dir(checkpoint: Path, name: str | None = None) -> Path:
    """`<run>/eval/<checkpoint name>`: beside the checkpoint, never inside it (a later save
    of the checkpoint replaces its folder), or `eval/<org>--<name>` for a checkpoint from the Hub
    (never inside the Hugging Face cache). `name` replaces the checkpoint's name (an ensemble's,
    or one with test-time augmentation)."""
    from_hub = hub_cache_name(checkpoint)
    if from_hub:
        return Path("eval") / (from_hub if name in (None, checkpoint.name) else f"{from_hub}--{name}")
    return checkpoint.parent / "eval" / (name or checkpoint.name)


def evaluate_checkpoint(checkpoint: str | os.PathLike | Sequence[str | os.PathLike], metadata: str | os.PathLike, labels=None,
                        split: str | os.PathLike | None = None, subset: str = "val",
                        out_dir: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                        columns: cdata.Columns | None = None, prompts=None,
                        batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                        workers: int | None = None, skip_missing: bool = False, topk: int = DEFAULT_TOPK,
                        weights: Sequence[float] | None = None, tta: str = "none",
                        classifier: Classifier | Ensemble | None = None, gallery_per_class: int = 0,
                        adapt_bn: bool = True) -> dict:
    """Metrics of a checkpoint (or the score-level ensemble of several, `weights` weighing their
    probabilities) on the frames of `metadata` (or of `split`'s `subset`: "train", "val", "test"
    or "all"), with test-time augmentation `tta` (none, flip, crops) and, with `adapt_bn`, the
    batch-norm statistics re-estimated on these frames first (`clipmg.inference.adapt`). Writes
    metrics.json, per_class.csv, confusion.csv, confusion.png, predictions.csv and
    clip_predictions.csv (one row per clip, as test.py writes it) into `out_dir` (default `<run>/eval/<checkpoint name>`,
    or `eval/<org>--<name>` for a Hub checkpoint); returns the metrics (with `n_images`,
    `n_skipped`, `images_per_s`, `out_dir`, `metrics_files`; a clip model's own clip figures as
    `clip_model_*`; with `gallery_per_class` the misclassified frames of the HTML report as
    `gallery`)."""
    check_inference_options(batch_size, topk, workers)
    columns = columns or cdata.Columns()
    classifier = classifier or load_classifier(checkpoint, weights, device=device, labels=labels, prompts=prompts,
                                               tta=tta)
    checkpoint_folder = classifier.checkpoint or Path(checkpoint)
    out = Path(out_dir) if out_dir is not None else default_eval_dir(checkpoint_folder, output_name(classifier))
    paths = {"metrics": out / "metrics.json", "per_class": out / "per_class.csv",
             "confusion": out / "confusion.csv", "confusion_png": out / "confusion.png"}
    check_output_folder(out, "--out")
    for path in (*paths.values(), out / "predictions.csv", out / "clip_predictions.csv"):
        check_output_file(path, "--out")
    frames, source = cdata.select_frames(metadata, classifier.label_table, split, subset, columns)
    roots = image_roots(image_root, metadata=metadata, config=classifier.config)
    index_of = {cid: i for i, cid in enumerate(classifier.class_ids)}
    targets = torch.tensor([index_of[int(c)] for c in frames["class_id"]], dtype=torch.long)
    clips = ClipCollector(plan_from_frames(frames, targets.numpy(), classifier.clip_frames,
                                           classifier.reads_whole_clip), classifier)
    adapted = adapt_classifier(classifier, frames["path"].to_numpy(), frames["row"].to_numpy(), roots,
                               source=str(source), column=columns.path, batch_size=batch_size,
                               workers=workers) if adapt_bn else 0
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
    keep = torch.from_numpy(ok)
    metrics = write_report(
        scored.logits[keep], targets[keep], classifier.class_names, paths, class_ids=classifier.class_ids,
        clip_ids=frames["video_id"].to_numpy()[ok], clip_model=clips.model_metrics_input(),
        extra={"n_skipped": int((~ok).sum()), "seconds": seconds, "images_per_s": int(ok.sum()) / seconds,
               "checkpoint": classifier.description if isinstance(classifier, Ensemble) else str(checkpoint_folder),
               "tta": classifier.tta, "bn_adapted_on": adapted, "metadata": str(metadata),
               "split": str(split) if split is not None else None,
               "subset": subset if split is not None else None, "out_dir": str(out)})
    standard = [c for c in ("path", "class_id", "video_id", "frame_id", "caption", "row") if c in frames]
    predictions = pd.concat([frames[standard], prediction_frame(scored.logits, scored.status, classifier, topk)], axis=1)
    with output_errors(out / "predictions.csv"), atomic_output(out / "predictions.csv") as handle:
        predictions.to_csv(handle, index=False, float_format="%.6f", lineterminator="\n")
    with output_errors(out / "clip_predictions.csv"), atomic_output(out / "clip_predictions.csv") as handle:
        clips.table(topk, "video_id", labelled=True).to_csv(handle, index=False, float_format="%.6f",
                                                            lineterminator="\n")
    metrics["metrics_files"] = {key: str(value) for key, value in paths.items()}
    if gallery_per_class > 0:
        gallery = MisclassifiedGallery(gallery_per_class, classifier.num_classes)
        gallery.add(scored.logits, np.where(ok, targets.numpy(), -1), frames["path"].to_numpy(),
                    frames["row"].to_numpy())
        metrics["gallery"] = gallery.to_dict(roots)
    if scored.reasons:
        metrics["skipped"] = [{"row": int(frames["row"].iat[i]), "status": state, "reason": message}
                              for i, state, message in scored.reasons[:MAX_LISTED_SKIPS]]
    return metrics
