"""A run's frames: the label file, the metadata split into training and validation frames (by
clip unless told otherwise, its leakage reported), the image folder, and their datasets: frames,
or for a clip model (`clip_frames`) clips of K frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.errors import DataError
from clipmg.losses import class_prior_bias, class_weights_from_counts
from clipmg.training.config import TrainConfig
from clipmg.training.preemption import ignore_preemption_signals
from clipmg.utils import default_workers, logger


@dataclass
class RunData:
    class_ids: list[int]
    class_names: list[str]
    train_frames: pd.DataFrame
    val_frames: pd.DataFrame
    image_root: Path
    split_report: dict = field(default_factory=dict)
    split: cdata.Split | None = None  # the split made here (None when read from a split CSV)
    all_frames: pd.DataFrame | None = None
    #: frames that neither train nor choose the checkpoint (empty: none were set apart)
    test_frames: pd.DataFrame | None = None

    @property
    def index_of(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.class_ids)}

    def write_split(self, run_dir: Path) -> None:
        """The split made for this run as `split.csv` (with `split.json`) in the run folder."""
        if self.split is not None:
            cdata.write_split(self.split, self.all_frames, run_dir / "split.csv")


def load_run_data(cfg: TrainConfig) -> RunData:
    if not cfg.data.metadata or not cfg.data.labels:
        raise DataError("training needs --metadata (train.xlsx or .csv) and --labels (Clip_label.csv)")
    columns = cfg.data.columns
    labels = cdata.load_labels(cfg.data.labels)
    image_root = Path(cfg.data.image_root) if cfg.data.image_root else cdata.default_image_root(cfg.data.metadata)
    split, frames = None, None
    if cfg.data.split:
        frames = cdata.read_split(cfg.data.split, labels, columns)
        train, val = frames[frames["split"] == "train"], frames[frames["split"] == "val"]
        test = frames[frames["split"] == "test"]
        report = {"source": str(cfg.data.split), "rows_test": len(test)}
        frames = None
    else:
        frames = cdata.read_metadata(cfg.data.metadata, labels=labels, columns=columns)
        split = cdata.split_dataset(frames, by=cfg.data.split_by, val_fraction=cfg.data.val_fraction, seed=cfg.run.seed,
                                    subject_column=cfg.data.subject_column, test_fraction=cfg.data.test_fraction)
        train, val, test = (frames.iloc[split.train_index], frames.iloc[split.val_index],
                            frames.iloc[split.test_index])
        report = split.report
    if report.get("leakage"):
        logger.warning("validation leaks: %.1f%% of validation frames come from clips also in training; "
                       "its accuracy will be inflated", 100 * report["leakage"])
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"the split leaves {len(train)} training and {len(val)} validation frames; "
                        "both must be non-empty")
    return RunData(list(labels), list(labels.values()), train.reset_index(drop=True), val.reset_index(drop=True),
                   image_root, report, split, frames, test.reset_index(drop=True))


def frame_dataset(data: RunData, frames: pd.DataFrame, model, cfg: TrainConfig, train: bool,
                  cache_frames: bool | None = None) -> cdata.FrameDataset:
    """The frames as model input: augmented for training unless the model's per-frame inputs are
    image positions (`geometric_augmentation`); flips happen in the dataset, not the transform, so
    that those inputs (keypoints) are mirrored with the image. Frames are decoded once per run
    (`cfg.data.cache_frames`)."""
    augment = train and model.geometric_augmentation
    extras = cdata.load_extra_fields(model.extra_inputs, frames["path"].tolist(), [data.image_root],
                                     model.input_settings)
    return cdata.FrameDataset(frames, data.image_root, cdata.transform_for_model(model.preprocess_config, train=augment),
                              skip_bad_images=cfg.data.skip_bad_images, class_index=data.index_of, extra_fields=extras,
                              hflip=cfg.run.hflip and augment,
                              cache_frames=cfg.data.cache_frames if cache_frames is None else cache_frames)


#: the one rule, `clipmg.utils.default_workers`, under the name the trainer imports
default_train_workers = default_workers


def run_items(frames: pd.DataFrame, clip_frames: int | None) -> pd.DataFrame:
    """What a run trains on and validates, one row each: the frames, or with `clip_frames` the
    clips (`clipmg.data.clip_table`: their first frame's columns, class and caption)."""
    return cdata.clip_table(frames) if clip_frames else frames


def batch_budget(frames: int, items: int, batch_size: int, clip_frames: int | None) -> tuple[int, int]:
    """(items per batch, items drawn per epoch). A frame model: `batch_size` frames, each frame
    once. A clip model of K frames gets the frame model's steps and items: `batch_size` clips a
    step, drawn as many times an epoch as there are frames (each clip at least once), so it sees
    K times the frames. With `batch_size // K` clips a step (the frame model's frames) it learned
    far less than the frame model it should improve on (docs/recipes.md, "Clip models")."""
    if not clip_frames:
        return batch_size, items
    return batch_size, max(items, frames)


def run_dataset(data: RunData, frames: pd.DataFrame, model, cfg: TrainConfig, train: bool):
    """`frame_dataset`, or for a clip model (its `clip_frames`) a `ClipDataset` of the same frames
    and augmentation (one draw per clip, or per frame where the model `augments_frames_apart`);
    items are in `run_items` order. A clip model that evaluates whole clips (`reads_whole_clip`)
    is evaluated on the frames, which `clipmg.training.validation` pools per clip."""
    clip_frames = getattr(model, "clip_frames", None)
    if not clip_frames or (not train and getattr(model, "reads_whole_clip", False)):
        return frame_dataset(data, frames, model, cfg, train)
    frame_items = frame_dataset(data, frames, model, cfg, train, cache_frames=False)
    return cdata.ClipDataset(frames, data.image_root, frame_items.transform, clip_frames, train=train,
                             skip_bad_images=cfg.data.skip_bad_images, class_index=data.index_of,
                             extra_fields=frame_items.extra_fields, hflip=frame_items.hflip,
                             cache_frames=cfg.data.cache_frames,
                             augment_apart=getattr(model, "augments_frames_apart", False))


def loader_options(workers: int, device: torch.device) -> dict:
    return {"num_workers": workers, "collate_fn": cdata.collate_frames, "persistent_workers": workers > 0,
            "pin_memory": device.type == "cuda", "worker_init_fn": ignore_preemption_signals if workers else None}


def class_balance(targets: torch.Tensor, num_classes: int, cfg: TrainConfig, has_classifier_head: bool,
                  device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(logit bias, class weights) of the training frames' class counts: tau * log(prior) for
    logit-adjusted losses (`logit_adjust_tau`), and a classifier head's loss weights
    (`class_weighting`); None where off."""
    counts = torch.bincount(targets, minlength=num_classes)
    bias = weights = None
    if cfg.objective.logit_adjust_tau > 0:
        prior = counts.float().clamp(min=1)
        bias = class_prior_bias(prior / prior.sum(), cfg.objective.logit_adjust_tau).to(device)
    if has_classifier_head:
        weights = class_weights_from_counts(counts, cfg.objective.class_weighting)
        weights = None if weights is None else weights.to(device)
    return bias, weights
