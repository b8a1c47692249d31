"""The benchmark's data: a generated demo dataset split by clip, and the CSVs that
open_clip_train and test.py read from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.settings import FRAMES_PER_CLIP, IMIGUE_CLASSES, BenchSettings
from clipmg import data as cdata
from clipmg.synthetic import make_demo_data


@dataclass
class BenchData:
    """The generated frames and the files both trainers and test.py read."""

    root: Path
    metadata: Path
    labels: Path
    image_root: Path
    split_csv: Path
    frames: pd.DataFrame  # all frames, standard columns
    train: pd.DataFrame  # the training side of the clip-grouped split
    info: dict = field(default_factory=dict)


def demo_layout(frames: int, classes: int = IMIGUE_CLASSES) -> dict:
    """Clips of FRAMES_PER_CLIP frames; `classes` of them, fewer when there are too few clips
    for 4 clips a class (at least 4 classes)."""
    clips = max(8, frames // FRAMES_PER_CLIP)
    return {"clips": clips, "frames_per_clip": FRAMES_PER_CLIP, "classes": min(classes, max(4, clips // 4))}


def prepare_data(settings: BenchSettings, root: Path) -> BenchData:
    layout = demo_layout(settings.frames, settings.classes)
    info = make_demo_data(root, size=settings.size, seed=settings.seed, **layout)
    labels = cdata.load_labels(info["labels"])
    frames = cdata.read_metadata(info["metadata"], labels=labels)
    split = cdata.split_dataset(frames, by="clip", seed=settings.seed)
    split_csv, _ = cdata.write_split(split, frames, root / "split.csv")
    return BenchData(root=root, metadata=Path(info["metadata"]), labels=Path(info["labels"]),
                     image_root=Path(info["image_root"]), split_csv=split_csv, frames=frames,
                     train=frames.iloc[split.train_index].reset_index(drop=True),
                     info={"frames": info["frames"], "classes": info["classes"], "clips": info["clips"],
                           "frame_size": settings.size, "train_frames": len(split.train_index),
                           "val_frames": len(split.val_index), "seconds_to_generate": info["seconds"]})


def write_open_clip_csv(data: BenchData, rows: int, path: Path) -> Path:
    """open_clip_train's CSV: absolute image paths and the captions clipmg trains on."""
    train = data.train.iloc[:rows]
    table = pd.DataFrame({"filepath": [str((data.image_root / p).resolve()) for p in train["path"]],
                          "title": train["caption"].astype(str).str.strip()})
    table.to_csv(path, index=False)
    return path


def write_inference_csv(data: BenchData, rows: int, path: Path) -> Path:
    """`rows` frames for test.py, the dataset's frames repeated as often as needed."""
    order = np.resize(np.arange(len(data.frames)), rows)
    frames = data.frames.iloc[order]
    table = pd.DataFrame({"Path": frames["path"].to_numpy(), "Class": frames["class_id"].to_numpy(),
                          "Video ID": frames["video_id"].to_numpy(), "Caption": frames["caption"].to_numpy()})
    table.to_csv(path, index=False)
    return path
