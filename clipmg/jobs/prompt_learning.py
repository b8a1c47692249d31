"""Learn prompts (CoOp, Zhou et al. 2022) for a frozen open_clip model: `clipmg prompts learn`.

Only the context of a `clipmg.prompts.PromptLearner` trains, with the class-contrast loss of
training (`clipmg.losses`, the text side = one prompt per class); both towers, the projections
and the temperature stay frozen. As the image tower is frozen, each frame is encoded once
(eval transform, no augmentation) and the epochs run on the cached features: an epoch costs one
text-tower pass per batch.

The result is a checkpoint folder like any other (the base model's weights and config.json)
plus ``prompt_learner.safetensors``; its config.json["prompts"] describes the learned set, so
`test.py`, `clipmg predict` and `clipmg evaluate` use it without any flag.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.checkpoint import CheckpointRecord, save_checkpoint
from clipmg.errors import DataError
from clipmg.inference import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    EncodedFrames,
    encode_frames,
    image_roots,
)
from clipmg.jobs.prompt_eval import freeze_all, load_classifier, score_prompt_set
from clipmg.losses import contrastive_loss
from clipmg.metrics import compute_metrics
from clipmg.prompts import (
    DEFAULT_CLASS_TEMPLATE,
    DEFAULT_N_CTX,
    LEARNED_FILE,
    PromptLearner,
    PromptSet,
    load_prompt_set,
)
from clipmg.training.optim import adamw, cosine_with_warmup
from clipmg.training.recipes import DEFAULT_WARMUP, warmup_steps
from clipmg.utils import atomic_write_text, logger, progress


def learn_prompts(out: str | os.PathLike, metadata: str | os.PathLike, *,
                  checkpoint: str | os.PathLike | None = None, model: str | None = None,
                  pretrained: str | None = None, labels=None, split=None, image_root=None,
                  columns: cdata.Columns | None = None, n_ctx: int = DEFAULT_N_CTX, init: str | None = None,
                  class_template: str = DEFAULT_CLASS_TEMPLATE, descriptions: str | None = None,
                  epochs: int = 30, batch_size: int = 32, lr: float = 2e-3, weight_decay: float = 0.0,
                  loss: str = "ce", seed: int = 0, val_fraction: float = 0.2, device: str = "auto",
                  workers: int | None = None, encode_batch_size: int = DEFAULT_BATCH_SIZE,
                  skip_missing: bool = False, tensorboard: bool = True) -> dict:
    """Learn a CoOp context for a frozen model on the training frames; validate each epoch on
    the validation frames against the bare class-name prompt of the same model.

    Frames: `split` (a split CSV: its train and val rows); else the split.csv of the checkpoint's
    run (the frames the model was trained and validated on), else a clip-grouped split of
    `metadata` (written to `out/split.csv`). Writes `out/best` (best validation top-1) and
    `out/last`, checkpoints with the learned prompts, `out/history.csv`, and returns a summary.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise DataError(f"need epochs >= 1, batch size >= 1 and lr > 0 (got {epochs}, {batch_size}, {lr})")
    out = Path(out)
    columns = columns or cdata.Columns()
    torch.manual_seed(seed)
    base = load_classifier(checkpoint, model, pretrained, labels, device)
    freeze_all(base.model)
    described = load_prompt_set(descriptions).descriptions if descriptions else {}
    learner = PromptLearner.create(base.model, n_ctx=n_ctx, init=init, seed=seed, class_template=class_template,
                                   descriptions=described)
    train_frames, val_frames, split_source = _frames(base, metadata, split, columns, seed, val_fraction, out)
    roots = image_roots(image_root, metadata=metadata, config=base.config)
    encode = {"column": columns.path, "batch_size": encode_batch_size, "workers": workers,
              "skip_missing": skip_missing}
    train = encode_frames(base, train_frames, roots, source=split_source, desc="encode train", **encode)
    val = encode_frames(base, val_frames, roots, source=split_source, desc="encode val", **encode)
    baselines = {"classnames": score_prompt_set(base, PromptSet(), val)}
    if base.checkpoint is not None and base.prompt_set.to_dict() != PromptSet().to_dict():
        baselines[f"checkpoint:{base.prompt_set.name}"] = score_prompt_set(base, base.prompt_set, val)

    num_classes = len(base.class_ids)
    text_labels = torch.arange(num_classes, device=base.device)
    scale = base.model.scale().detach().float()
    optimizer = adamw([{"params": list(learner.parameters()), "lr": lr, "weight_decay": weight_decay}])
    total = epochs * math.ceil(len(train) / batch_size)
    scheduler = cosine_with_warmup(optimizer, warmup_steps(DEFAULT_WARMUP, total), total)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    history, best, best_state = [], None, None
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    features = torch.from_numpy(train.embeddings).to(base.device)
    targets = torch.from_numpy(train.targets).to(base.device)
    try:
        for epoch in range(epochs):
            learner.train()
            order = torch.randperm(len(targets), generator=generator).to(base.device)
            losses = []
            for begin in progress(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}"):
                rows = order[begin:begin + batch_size]
                text = learner(base.model, base.class_names, base.class_ids)
                value = contrastive_loss(loss, features[rows], text, scale, targets[rows], text_labels)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                scheduler.step()
                losses.append(value.item())
            metrics = _validate(learner, base, val)
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in
                                                                                   metrics.items()}}
            history.append(record)
            logger.info("epoch %d: train loss %.4f | val top1 %.4f clip_top1 %.4f loss %.4f", epoch + 1,
                        record["train_loss"], metrics["top1"], metrics.get("clip_top1", float("nan")),
                        metrics["loss"])
            if writer is not None:
                writer.add_scalar("train/loss", record["train_loss"], epoch + 1)
                for key, value in metrics.items():
                    writer.add_scalar(f"val/{key}", value, epoch + 1)
            if best is None or metrics["top1"] > best["top1"]:
                best, best_state = {**metrics, "epoch": epoch + 1}, learner.ctx.detach().clone()
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    model_name = base.model.model_config.get("name")
    settings = {"base": base.description, "metadata": str(metadata), "split": split_source, "n_ctx": learner.n_ctx,
                "init": init, "class_template": class_template, "descriptions": descriptions, "epochs": epochs,
                "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "loss": loss, "seed": seed,
                "n_train": len(train), "n_val": len(val)}
    last_metrics = history[-1]
    last = _save(out / "last", learner, base, model_name, settings,
                 {k[4:]: v for k, v in last_metrics.items() if k.startswith("val_")}, baselines, metadata, image_root)
    with torch.no_grad():
        learner.ctx.copy_(best_state)
    best_folder = _save(out / "best", learner, base, model_name, settings, best, baselines, metadata, image_root)
    atomic_write_text(out / "history.csv", pd.DataFrame(history).to_csv(index=False, float_format="%.6f"))
    return {"out": str(out), "best_checkpoint": str(best_folder), "last_checkpoint": str(last), "best": best,
            "last": {k[4:]: v for k, v in last_metrics.items() if k.startswith("val_")}, "baselines": baselines,
            "settings": settings, "seconds": seconds, "encode_seconds": train.seconds + val.seconds}


@torch.no_grad()
def _validate(learner: PromptLearner, base: Classifier, val: EncodedFrames) -> dict:
    learner.eval()
    logits = base.logits_from_features(val.scoring, learner(base.model, base.class_names, base.class_ids))
    targets = torch.from_numpy(val.targets)
    metrics = compute_metrics(logits, targets, clip_ids=val.clip_ids, num_classes=base.num_classes)
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, targets).item()
    return metrics


def _frames(base, metadata, split, columns, seed: int, val_fraction: float, out: Path):
    """(train frames, val frames, their source)."""
    table = base.label_table
    if split is None and base.checkpoint is not None and (base.checkpoint.parent / "split.csv").is_file():
        split = base.checkpoint.parent / "split.csv"
        logger.info("using %s, the split the checkpoint was trained on", split)
    if split is not None:
        frames = cdata.read_split(split, labels=table, columns=columns)
        source = str(split)
    else:
        frames = cdata.read_metadata(metadata, labels=table, columns=columns)
        result = cdata.split_dataset(frames, by="clip", val_fraction=val_fraction, seed=seed)
        out.mkdir(parents=True, exist_ok=True)
        cdata.write_split(result, frames, out / "split.csv")
        frames = cdata.read_split(out / "split.csv", labels=table, columns=columns)
        source = str(out / "split.csv")
    train = frames[frames["split"] == "train"].reset_index(drop=True)
    val = frames[frames["split"] == "val"].reset_index(drop=True)
    if train.empty or val.empty:
        raise DataError(f"{source} leaves {len(train)} training and {len(val)} validation frames; both are needed")
    return train, val, source


def _save(folder: Path, learner: PromptLearner, base, model_name, settings: dict, metrics: dict, baselines: dict,
          metadata, image_root) -> Path:
    prompt_set = learner.to_prompt_set(model_name)
    train = dict(base.record.train or {"metadata": str(metadata), "image_root": image_root})
    record = CheckpointRecord(class_ids=base.class_ids, class_names=base.class_names, prompts=prompt_set.to_dict(),
                              preprocess=base.preprocess, train=train, metrics=metrics,
                              prompt_learning={**settings, "baselines": baselines})
    return save_checkpoint(folder, base.model, record,
                           extra_writers=[lambda staging: prompt_set.save(staging / LEARNED_FILE)])
