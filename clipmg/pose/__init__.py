"""Pose inputs: MediaPipe keypoints per frame (`keypoints`), their cache (`cache`), hand boxes
(`hands`), and the "keypoints" / "hand_boxes" per-frame model inputs (`fields`).

MediaPipe is optional (the `pose` extra); it is imported only when keypoints are extracted.
"""

from clipmg.pose.keypoints import KEYPOINT_DIM, KeypointExtractor, import_mediapipe

__all__ = ["KEYPOINT_DIM", "KeypointExtractor", "import_mediapipe"]
