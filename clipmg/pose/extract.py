"""Fill the keypoint cache of a metadata file ahead of training (`clipmg keypoints extract`).

Training, evaluation and test.py extract missing keypoints by themselves; this does it up front
(resumable: run it again after a kill) and reports what MediaPipe found.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from clipmg import data as cdata
from clipmg.errors import DataError
from clipmg.pose.cache import keypoints_for_paths
from clipmg.pose.keypoints import HAND_FOUND, POSE_FOUND, import_mediapipe


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
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise DataError(f"column {column!r} is not in {csv}; its columns are {', '.join(map(repr, frame.columns))}")
    return frame[[column]]
