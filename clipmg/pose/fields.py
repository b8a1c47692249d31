"""The per-frame model inputs of the pose models, registered with `clipmg.data`:

- "keypoints": (N, KEYPOINT_DIM) MediaPipe keypoint vectors (`clipmg.pose.keypoints`);
- "hand_boxes": (N, 2, 5) hand boxes in the model's square input view (`clipmg.pose.hands`).

Both read the keypoint cache and extract what is missing, so training, evaluation and test.py
get the same inputs for old and new frames. Importing this module needs no MediaPipe; only an
extraction does.

Both are image positions: a horizontally flipped frame gets `mirror_keypoints` /
`mirror_hand_boxes` of its row (see `clipmg.data.extras`).
"""

from __future__ import annotations

from clipmg.data import register_extra_field
from clipmg.pose.cache import keypoints_for_paths
from clipmg.pose.hands import hand_boxes_for_paths, mirror_hand_boxes
from clipmg.pose.keypoints import mirror_keypoints

KEYPOINTS_FIELD = "keypoints"
HAND_BOXES_FIELD = "hand_boxes"

register_extra_field(KEYPOINTS_FIELD, mirror=mirror_keypoints)(keypoints_for_paths)
register_extra_field(HAND_BOXES_FIELD, mirror=mirror_hand_boxes)(hand_boxes_for_paths)
