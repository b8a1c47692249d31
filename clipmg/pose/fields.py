"""The per-frame model inputs of the pose models, registered with `clipmg.data`:

- "keypoints": (N, KEYPOINT_DIM) MediaPipe keypoint vectors (`clipmg.pose.keypoints`);
- "hand_boxes": (N, 2, 5) hand boxes in the model's square input view (`clipmg.pose.hands`).

Both read the keypoint cache and extract what is missing, so training, evaluation and test.py
get the same inputs for old and new frames. Importing this module needs no MediaPipe; only an
extraction does.
"""

from __future__ import annotations

from clipmg.data import register_extra_field
from clipmg.pose.cache import keypoints_for_paths
from clipmg.pose.hands import hand_boxes_for_paths

KEYPOINTS_FIELD = "keypoints"
HAND_BOXES_FIELD = "hand_boxes"

register_extra_field(KEYPOINTS_FIELD)(keypoints_for_paths)
register_extra_field(HAND_BOXES_FIELD)(hand_boxes_for_paths)
