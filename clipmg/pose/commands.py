"""`clipmg keypoints extract`: fill the keypoint cache of a metadata file ahead of training.

Training, evaluation and test.py extract missing keypoints by themselves; this command does it
up front (with a progress bar, resumable: run it again after a kill) and reports what MediaPipe
found.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from clipmg import data as cdata
from clipmg.errors import DataError
from clipmg.pose.cache import keypoints_for_paths
from clipmg.pose.keypoints import HAND_FOUND, POSE_FOUND, import_mediapipe


def add_keypoints_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["extract"], help="extract: fill the keypoint cache of --metadata")
    parser.add_argument("--metadata", required=True, help="train.xlsx, a split CSV or any CSV with a Path column")
    parser.add_argument("--path-column", default="Path")
    parser.add_argument("--image-root", help="folder the Path column is relative to (default: the metadata's)")
    parser.add_argument("--cache", help="keypoint cache folder (default: .clipmg_keypoints/ in the image root); "
                                        "train with --keypoints FOLDER to use it")
    parser.add_argument("--limit", type=int, default=None, help="only the first N frames (a quick check)")


def extract_keypoints(metadata: str | Path, path_column: str = "Path", image_root: str | Path | None = None,
                      cache: str | Path | None = None, limit: int | None = None) -> dict:
    """Extract (or read from the cache) the keypoints of every frame of `metadata`; a summary."""
    import_mediapipe()
    metadata = Path(metadata)
    if not metadata.is_file():
        raise DataError(f"metadata file not found: {metadata}")
    frames = cdata.read_metadata(metadata, columns=cdata.Columns(path=path_column)) if metadata.suffix in (
        ".xlsx", ".xlsm") else _read_paths(metadata, path_column)
    paths = list(frames["path"] if "path" in frames else frames[path_column])[:limit]
    root = Path(image_root) if image_root else cdata.default_image_root(metadata)
    start = time.perf_counter()
    vectors = keypoints_for_paths([str(p) for p in paths], [root], {"keypoints": str(cache) if cache else None})
    seconds = time.perf_counter() - start
    hands = vectors[:, list(HAND_FOUND)].sum(axis=1)
    return {"frames": len(paths), "seconds": round(seconds, 1), "image_root": str(root),
            "person_found": float(np.mean(vectors[:, POSE_FOUND] > 0)) if len(paths) else 0.0,
            "any_hand_found": float(np.mean(hands >= 1)) if len(paths) else 0.0,
            "two_hands_found": float(np.mean(hands >= 2)) if len(paths) else 0.0}


def _read_paths(csv: Path, column: str):
    import pandas as pd

    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise DataError(f"column {column!r} is not in {csv}; its columns are {', '.join(map(repr, frame.columns))}")
    return frame[[column]]


def keypoints_from_args(args: argparse.Namespace) -> int:
    summary = extract_keypoints(args.metadata, args.path_column, args.image_root, args.cache, args.limit)
    print(f"{summary['frames']} frames under {summary['image_root']} in {summary['seconds']} s (cached ones are "
          f"read, not extracted): person found in {summary['person_found']:.1%}, a hand in "
          f"{summary['any_hand_found']:.1%}, both hands in {summary['two_hands_found']:.1%}")
    return 0
