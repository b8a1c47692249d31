"""The main job: generate the demo dataset, train the default small model on a clip-grouped split,
evaluate it and write predictions and TensorBoard logs."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from clipmg.inference import evaluate_checkpoint, predict_csv
from clipmg.synthetic import make_demo_data
from clipmg.training import TrainConfig, train

# Many short clips rather than few long ones: a clip's frames are near-duplicates, so what a
# model learns to generalise from is the number of clips (as in iMiGUE).
DEMO_DATA = {"classes": 12, "clips": 900, "frames_per_clip": 2, "size": 64}
QUICK_DATA = {"classes": 4, "clips": 24, "frames_per_clip": 2, "size": 64}
# Clips of 8 frames for clip models (`clipmg compare --demo-data motion|static`): with motion,
# classes 1-4 are movements only the order of the frames tells apart (clipmg.synthetic.motion).
MOTION_DATA = {"classes": 12, "clips": 360, "frames_per_clip": 8, "size": 64, "motion": True}
QUICK_MOTION_DATA = {"classes": 4, "clips": 12, "frames_per_clip": 8, "size": 64, "motion": True}
DEMO_DATA_SETS = {"frames": (DEMO_DATA, QUICK_DATA), "motion": (MOTION_DATA, QUICK_MOTION_DATA),
                  "static": ({**MOTION_DATA, "motion": False}, {**QUICK_MOTION_DATA, "motion": False})}


def demo_data_settings(kind: str = "frames", quick: bool = False) -> dict:
    """`make_demo_data` settings of a demo data set: "frames" (the demo's, many short clips),
    "motion" (clips of 8 frames, classes 1-4 moving) or "static" (the same clips, all still)."""
    return dict(DEMO_DATA_SETS[kind][1 if quick else 0])

# What is about the demo's data only; everything else is `clipmg train`'s defaults.
DEMO_TRAIN = {
    "epochs": 15,
    "image_size": 64,  # the demo draws 64 px frames: a larger input would only enlarge them
}
QUICK_TRAIN = {"model": "openclip:clipmg-tiny", "epochs": 1, "batch_size": 16}


def run_demo(out: str | Path = "demo_out", epochs: int | None = None, quick: bool = False, seed: int = 0,
             device: str = "auto") -> dict:
    out = Path(out)
    start = time.perf_counter()
    data = make_demo_data(out / "data", seed=seed, **(QUICK_DATA if quick else DEMO_DATA))
    metadata = out / "data" / "training" / "train.xlsx"
    labels = out / "data" / "Clip_label.csv"
    settings = {**DEMO_TRAIN, **(QUICK_TRAIN if quick else {}), "metadata": str(metadata), "labels": str(labels),
                "output": str(out / "run"), "seed": seed, "device": device}
    if epochs is not None:
        settings["epochs"] = epochs
    summary = train(TrainConfig(**settings).validate())
    run = Path(summary["run_dir"])
    split_csv = run / "split.csv"
    image_root = out / "data" / "training"
    # the figures come from the test part: frames that neither trained nor chose best/
    subset = "test" if summary.get("test") else "val"
    metrics = evaluate_checkpoint(run / "best", split_csv, labels=labels, split=split_csv, subset=subset,
                                  out_dir=run / "eval", image_root=image_root)
    # Beside training/, so test.py finds the images with its default --image-root.
    frames_csv = out / "data" / f"{subset}_frames.csv"
    _write_frames_csv(split_csv, subset, frames_csv)
    predictions = predict_csv(run / "best", frames_csv, "Path", output=out / "predictions.csv",
                              device=device)
    return {"data": data, "train": summary, "metrics": metrics, "predictions": predictions, "subset": subset,
            "run_dir": str(run), "checkpoint": str(run / "best"), "tensorboard": str(run / "tensorboard"),
            "frames_csv": str(frames_csv), "seconds": time.perf_counter() - start}


def _write_frames_csv(split_csv: Path, subset: str, out: Path) -> None:
    """One part of the split as a plain CSV, the shape users hand to test.py."""
    frames = pd.read_csv(split_csv)
    frames[frames["split"] == subset].drop(columns="split").to_csv(out, index=False)
