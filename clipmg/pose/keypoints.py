"""Body and hand keypoints of one frame with MediaPipe, as one fixed-length float vector.

MediaPipe is an optional extra (`pip install -c constraints.txt -e .[pose]`): version 0.10.14
is the last whose wheel ships the pose, palm and hand models, so extraction works offline. The
legacy `solutions` API loads those bundled models; the pose model is the bundled "full" one
(`model_complexity=1`: the lite and heavy models are not in the wheel and would be downloaded).

Vector layout (`KEYPOINT_DIM` = 262 floats), coordinates are fractions of the image width and
height (x right, y down), z as MediaPipe gives it (pose: about hip-width units; hands: relative
to the wrist):

    [0:132)    33 pose landmarks x (x, y, z, visibility)          POSE
    [132:195)  21 landmarks x (x, y, z) of the hand MediaPipe labels "Left"
    [195:258)  21 landmarks x (x, y, z) of the hand it labels "Right"
    258        1 if a person (pose) was found, else 0              POSE_FOUND
    259, 260   1 if the "Left" / "Right" hand was found            HAND_FOUND
    261        image aspect ratio, width / height                 ASPECT

MediaPipe's handedness assumes a mirrored (selfie) image: on an ordinary frame its "Left" is
usually the person's right hand. Parts not found are zeros.

A horizontal flip of the frame maps the vector with `mirror_keypoints` (see there).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from clipmg.errors import ModelError

MEDIAPIPE_VERSION = "0.10.14"
POSE_LANDMARKS, HAND_LANDMARKS = 33, 21
POSE_VALUES, HAND_VALUES = 4, 3
POSE = slice(0, POSE_LANDMARKS * POSE_VALUES)
HANDS = (
    slice(POSE.stop, POSE.stop + HAND_LANDMARKS * HAND_VALUES),
    slice(POSE.stop + HAND_LANDMARKS * HAND_VALUES, POSE.stop + 2 * HAND_LANDMARKS * HAND_VALUES),
)
HAND_LABELS = ("Left", "Right")
POSE_FOUND = HANDS[1].stop
HAND_FOUND = (POSE_FOUND + 1, POSE_FOUND + 2)
ASPECT = POSE_FOUND + 3
KEYPOINT_DIM = ASPECT + 1

#: MediaPipe Pose's landmarks in index order (`mediapipe.solutions.pose.PoseLandmark`, lower case).
#: "left" and "right" are the person's own sides.
POSE_LANDMARK_NAMES = (
    "nose",
    "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)


def _mirror_partners(names: tuple[str, ...]) -> tuple[int, ...]:
    """For each landmark, the index of its left/right partner (itself for the nose)."""
    swap = {"left": "right", "right": "left"}
    return tuple(names.index("_".join(swap.get(word, word) for word in name.split("_"))) for name in names)


#: POSE_MIRROR[i]: the landmark that lands where landmark i was after a horizontal flip.
POSE_MIRROR = _mirror_partners(POSE_LANDMARK_NAMES)

INSTALL_HINT = ("install the pose extra: `bash scripts/install.sh pose` or "
                f"`pip install -c constraints.txt -e .[pose]` (mediapipe=={MEDIAPIPE_VERSION})")


def import_mediapipe():
    """The mediapipe module, or a ModelError saying how to install the extra."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ info and warning lines on stderr
    try:
        import mediapipe
    except ImportError as error:
        raise ModelError(f"keypoint extraction needs MediaPipe, which is not installed: {INSTALL_HINT}") from error
    if not hasattr(mediapipe, "solutions"):
        raise ModelError(f"mediapipe {getattr(mediapipe, '__version__', '?')} has no bundled pose and hand "
                         f"models (the `solutions` API); {INSTALL_HINT}")
    return mediapipe


def empty_keypoints(aspect: float = 0.0) -> np.ndarray:
    """The vector of a frame where nothing was found."""
    vector = np.zeros(KEYPOINT_DIM, dtype=np.float32)
    vector[ASPECT] = aspect
    return vector


def pose_landmarks(vector: np.ndarray) -> np.ndarray:
    """(..., 33, 4) x, y, z, visibility."""
    return vector[..., POSE].reshape(*vector.shape[:-1], POSE_LANDMARKS, POSE_VALUES)


def hand_landmarks(vector: np.ndarray, hand: int) -> np.ndarray:
    """(..., 21, 3) x, y, z of hand slot 0 ("Left") or 1 ("Right")."""
    return vector[..., HANDS[hand]].reshape(*vector.shape[:-1], HAND_LANDMARKS, HAND_VALUES)


def mirror_keypoints(vectors: np.ndarray) -> np.ndarray:
    """The keypoint vector(s) (..., KEYPOINT_DIM) of the horizontally flipped frame (a new array).

    What a flip does to each part of the layout:

    - x of every landmark of a found part becomes 1 - x (x is a fraction of the width; values
      outside [0, 1], landmarks MediaPipe places beyond the border, mirror the same way); y, z and
      pose visibility are unchanged and travel with their landmark;
    - pose: the person's left side is seen as their right side, so each landmark takes its
      partner's place (`POSE_MIRROR`: left_eye <-> right_eye, ..., mouth_left <-> mouth_right,
      left_shoulder <-> right_shoulder, ...; the nose stays);
    - hands: MediaPipe labels a hand from its shape, and a mirrored right hand is a left hand, so
      the "Left" and "Right" blocks swap together with their found flags (HAND_FOUND); the 21
      landmarks within a hand have no sides and keep their order;
    - parts not found (flag 0; zeros as extracted) keep their values exactly: only found parts
      are mirrored (a hand not found still changes slot: the missing "Left" hand becomes the
      missing "Right" one);
    - POSE_FOUND and ASPECT (width / height) do not change.

    Mirroring twice gives the vector back (up to float rounding of 1 - (1 - x)).
    """
    source = np.asarray(vectors)
    if source.shape[-1] != KEYPOINT_DIM:
        raise ModelError(f"keypoint vectors have {KEYPOINT_DIM} values, got shape {source.shape}")
    mirrored = source.copy()
    lead = source.shape[:-1]
    pose = pose_landmarks(source)
    mirrored[..., POSE] = np.where(source[..., POSE_FOUND, None, None] > 0.5,
                                   _mirror_x(pose[..., list(POSE_MIRROR), :]), pose).reshape(*lead, -1)
    for slot in (0, 1):
        other = 1 - slot
        hand = hand_landmarks(source, other)
        mirrored[..., HANDS[slot]] = np.where(source[..., HAND_FOUND[other], None, None] > 0.5,
                                              _mirror_x(hand), hand).reshape(*lead, -1)
        mirrored[..., HAND_FOUND[slot]] = source[..., HAND_FOUND[other]]
    return mirrored


def _mirror_x(landmarks: np.ndarray) -> np.ndarray:
    """(..., L, values) landmarks with x (value 0) replaced by 1 - x."""
    landmarks = landmarks.copy()
    landmarks[..., 0] = 1 - landmarks[..., 0]
    return landmarks


def person_found(vectors: np.ndarray) -> np.ndarray:
    """True where the pose or a hand was found."""
    return vectors[..., [POSE_FOUND, *HAND_FOUND]].max(axis=-1) > 0.5


@dataclass
class ExtractorSettings:
    min_detection_confidence: float = 0.5
    max_hands: int = 2
    hand_model_complexity: int = 1  # 0 = hand_landmark_lite, 1 = full; both are in the wheel

    def to_dict(self) -> dict:
        return {"mediapipe": MEDIAPIPE_VERSION, "pose_model_complexity": 1, **self.__dict__}


class KeypointExtractor:
    """`extract(rgb_uint8_image) -> (KEYPOINT_DIM,) float32`. Holds MediaPipe graphs; close it
    (or use `with`) to free them."""

    def __init__(self, settings: ExtractorSettings | None = None):
        mp = import_mediapipe()
        self.settings = settings or ExtractorSettings()
        confidence = self.settings.min_detection_confidence
        self.pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                           min_detection_confidence=confidence)
        self.hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=self.settings.max_hands,
                                              model_complexity=self.settings.hand_model_complexity,
                                              min_detection_confidence=confidence)

    def __enter__(self) -> KeypointExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.pose.close()
        self.hands.close()

    def extract(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ModelError(f"keypoint extraction takes (H, W, 3) uint8 RGB images, got {image.shape} {image.dtype}")
        image = np.ascontiguousarray(image)
        vector = empty_keypoints(image.shape[1] / image.shape[0])
        with warnings.catch_warnings():  # protobuf 4's deprecation notice inside MediaPipe
            warnings.simplefilter("ignore", UserWarning)
            pose = self.pose.process(image).pose_landmarks
            hands = self.hands.process(image)
        if pose is not None:
            vector[POSE] = [v for p in pose.landmark for v in (p.x, p.y, p.z, p.visibility)]
            vector[POSE_FOUND] = 1.0
        for landmarks, handedness in zip(hands.multi_hand_landmarks or [], hands.multi_handedness or []):
            slot = _hand_slot(handedness.classification[0].label, vector)
            if slot is not None:
                vector[HANDS[slot]] = [v for p in landmarks.landmark for v in (p.x, p.y, p.z)]
                vector[HAND_FOUND[slot]] = 1.0
        return vector


def _hand_slot(label: str, vector: np.ndarray) -> int | None:
    """The slot of MediaPipe's handedness label, or the other one if it is taken (two hands
    can get the same label)."""
    preferred = HAND_LABELS.index(label) if label in HAND_LABELS else 0
    for slot in (preferred, 1 - preferred):
        if vector[HAND_FOUND[slot]] == 0:
            return slot
    return None
