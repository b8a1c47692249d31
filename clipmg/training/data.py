"""A run's frames: the label file, the metadata split into training and validation frames (by
clip unless told otherwise, its leakage reported), the image folder, and their datasets: frames,
or for a clip model (`clip_frames`) clips of K frames."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.errors import DataError
from clipmg.training.config import TrainConfig
from clipmg.training.preemption import ignore_preemption_signals
from clipmg.utils import logger

CPU_CORES_PER_WORKER = 8


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

    @property
    def index_of(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.class_ids)}

    def write_split(self, run_dir: Path) -> None:
        """The split made for this run as `split.csv` (with `split.json`) in the run folder."""
        if self.split is not None:
            cdata.write_split(self.split, self.all_frames, run_dir / "split.csv")


def load_run_data(cfg: TrainConfig) -> RunData:
    if not cfg.metadata or not cfg.labels:
        raise DataError("training needs --metadata (train.xlsx or .csv) and --labels (Clip_label.csv)")
    columns = cdata.Columns(path=cfg.path_column, class_=cfg.class_column, video=cfg.video_column,
                            frame=cfg.frame_column, caption=cfg.caption_column)
    labels = cdata.load_labels(cfg.labels)
    image_root = Path(cfg.image_root) if cfg.image_root else cdata.default_image_root(cfg.metadata)
    split, frames = None, None
    if cfg.split:
        frames = cdata.read_split(cfg.split, labels, columns)
        train, val = frames[frames["split"] == "train"], frames[frames["split"] == "val"]
        report = {"source": str(cfg.split)}
        frames = None
    else:
        frames = cdata.read_metadata(cfg.metadata, labels=labels, columns=columns)
        split = cdata.split_dataset(frames, by=cfg.split_by, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                    subject_column=cfg.subject_column)
        train, val = frames.iloc[split.train_index], frames.iloc[split.val_index]
        report = split.report
    if report.get("leakage"):
        logger.warning("validation leaks: %.1f%% of validation frames come from clips also in training; "
                       "its accuracy will be inflated", 100 * report["leakage"])
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"the split leaves {len(train)} training and {len(val)} validation frames; "
                        "both must be non-empty")
    return RunData(list(labels), list(labels.values()), train.reset_index(drop=True), val.reset_index(drop=True),
                   image_root, report, split, frames)


def frame_dataset(data: RunData, frames: pd.DataFrame, model, cfg: TrainConfig, train: bool) -> cdata.FrameDataset:
    """The frames as model input: augmented for training unless the model's per-frame inputs are
    image positions (`geometric_augmentation`); flips happen in the dataset, not the transform, so
    that those inputs (keypoints) are mirrored with the image."""
    augment = train and model.geometric_augmentation
    extras = cdata.load_extra_fields(model.extra_inputs, frames["path"].tolist(), [data.image_root],
                                     model.input_settings)
    return cdata.FrameDataset(frames, data.image_root, cdata.transform_for_model(model.preprocess_config, train=augment),
                              skip_bad_images=cfg.skip_bad_images, class_index=data.index_of, extra_fields=extras,
                              hflip=cfg.hflip and augment)


def default_train_workers(device: torch.device) -> int:
    """Decoding processes for training: min(4, cores) beside a GPU; on the CPU each worker takes
    a core from the model, so none below 8 cores (measured in docs/recipes.md)."""
    cores = os.cpu_count() or 1
    return min(4, cores) if device.type == "cuda" else min(4, cores // CPU_CORES_PER_WORKER)


def run_items(frames: pd.DataFrame, clip_frames: int | None) -> pd.DataFrame:
    """What a run trains on and validates, one row each: the frames, or with `clip_frames` the
    clips (`clipmg.data.clip_table`: their first frame's columns, class and caption)."""
    return cdata.clip_table(frames) if clip_frames else frames


def run_dataset(data: RunData, frames: pd.DataFrame, model, cfg: TrainConfig, train: bool):
    """`frame_dataset`, or for a clip model (its `clip_frames`) a `ClipDataset` of the same frames
    and augmentation, one draw per clip; items are in `run_items` order."""
    clip_frames = getattr(model, "clip_frames", None)
    frame_items = frame_dataset(data, frames, model, cfg, train)
    if not clip_frames:
        return frame_items
    return cdata.ClipDataset(frames, data.image_root, frame_items.transform, clip_frames, train=train,
                             skip_bad_images=cfg.skip_bad_images, class_index=data.index_of,
                             extra_fields=frame_items.extra_fields, hflip=frame_items.hflip)


def loader_options(workers: int, device: torch.device) -> dict:
    return {"num_workers": workers, "collate_fn": cdata.collate_frames, "persistent_workers": workers > 0,
            "pin_memory": device.type == "cuda", "worker_init_fn": ignore_preemption_signals if workers else None}
