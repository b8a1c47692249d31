"""Hand boxes from the cached MediaPipe hand landmarks (palm detector, then hand landmarks).

A box is the landmarks' extent, grown by `margin` times its longer side on every side and made
square (hands are small and the crop is resized to a square model input), then clipped to the
image. Boxes are given in the coordinates of the model's square input view: evaluation
preprocessing resizes the shorter side and takes the centre square, so a box in image fractions
(x / width, y / height) is mapped into that square using the frame's aspect ratio, which the
keypoint vector records.

A horizontal flip of the frame maps the boxes with `mirror_hand_boxes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clipmg.errors import ModelError
from clipmg.pose.keypoints import ASPECT, HAND_FOUND, hand_landmarks

DEFAULT_MARGIN = 0.3
BOX_VALUES = 5  # x0, y0, x1, y1 (fractions of the square view), valid


def hand_boxes_in_image(vectors: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """(N, 2, 5): boxes in image fractions (x0, y0, x1, y1, valid) of hand slots 0 and 1."""
    vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, vectors.shape[-1])
    aspect = np.where(vectors[:, ASPECT] > 0, vectors[:, ASPECT], 1.0)
    boxes = np.zeros((len(vectors), 2, BOX_VALUES), dtype=np.float32)
    for slot in (0, 1):
        points = hand_landmarks(vectors, slot)[..., :2]
        low, high = points.min(axis=1), points.max(axis=1)
        # square in pixels: work in units of the image height (x * aspect)
        centre_x, centre_y = (low[:, 0] + high[:, 0]) / 2 * aspect, (low[:, 1] + high[:, 1]) / 2
        side = np.maximum((high[:, 0] - low[:, 0]) * aspect, high[:, 1] - low[:, 1]) * (1 + 2 * margin)
        half = side / 2
        x0, x1 = (centre_x - half) / aspect, (centre_x + half) / aspect
        y0, y1 = centre_y - half, centre_y + half
        box = np.clip(np.stack([x0, y0, x1, y1], axis=1), 0.0, 1.0)
        valid = (vectors[:, HAND_FOUND[slot]] > 0.5) & (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        boxes[:, slot, :4] = np.where(valid[:, None], box, 0.0)
        boxes[:, slot, 4] = valid
    return boxes


def image_boxes_to_square_view(boxes: np.ndarray, aspect: np.ndarray) -> np.ndarray:
    """Map (N, K, 5) boxes from image fractions into the centre square that evaluation
    preprocessing keeps (side = the shorter image side); boxes outside it become invalid."""
    boxes = np.array(boxes, dtype=np.float32, copy=True)
    aspect = np.where(np.asarray(aspect) > 0, np.asarray(aspect, dtype=np.float32), 1.0)[:, None]
    wide, tall = np.maximum(aspect, 1.0), np.maximum(1.0 / aspect, 1.0)
    for low, high, stretch in ((0, 2, wide), (1, 3, tall)):
        offset = (stretch - 1) / 2
        boxes[..., low] = np.clip(boxes[..., low] * stretch - offset, 0, 1)
        boxes[..., high] = np.clip(boxes[..., high] * stretch - offset, 0, 1)
    inside = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    boxes[..., 4] = boxes[..., 4] * inside
    boxes[..., :4] *= boxes[..., 4:5]
    return boxes


def hand_boxes_for_model(vectors: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """(N, 2, 5) boxes in the square model view, from keypoint vectors."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return image_boxes_to_square_view(hand_boxes_in_image(vectors, margin), vectors[:, ASPECT])


def mirror_hand_boxes(boxes: np.ndarray) -> np.ndarray:
    """The (..., 2, 5) boxes of the horizontally flipped frame (a new array): x0, x1 of a valid
    box become 1 - x1, 1 - x0 (the centre square of the view mirrors onto itself), y is unchanged,
    and the two slots swap, as the hands' slots do in `mirror_keypoints` (slot k is the hand of
    keypoint slot k). Invalid boxes stay zeros. Equal to `hand_boxes_for_model` of the mirrored
    keypoints."""
    source = np.asarray(boxes)
    if source.shape[-2:] != (2, BOX_VALUES):
        raise ModelError(f"hand boxes are (..., 2, {BOX_VALUES}), got shape {source.shape}")
    mirrored = source[..., ::-1, :].copy()
    valid = mirrored[..., 4] > 0.5
    x0, x1 = mirrored[..., 0].copy(), mirrored[..., 2].copy()
    mirrored[..., 0] = np.where(valid, 1 - x1, x0)
    mirrored[..., 2] = np.where(valid, 1 - x0, x1)
    return mirrored


def hand_boxes_for_paths(paths: Sequence[str], roots: Sequence[Path], options: Mapping | None = None) -> np.ndarray:
    """The "hand_boxes" field: keypoints from the cache (extracted where missing), then boxes."""
    from clipmg.pose.cache import keypoints_for_paths

    options = dict(options or {})
    margin = options.get("hand_margin")
    margin = DEFAULT_MARGIN if margin is None else float(margin)
    return hand_boxes_for_model(keypoints_for_paths(paths, roots, options), margin)
