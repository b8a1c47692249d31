"""Keypoints (`clipmg.pose`): the vector layout, the resumable cache, hand boxes, and MediaPipe
extraction on generated images and, when present, on the real frames of ../shared/imigue/samples.
Tests that run MediaPipe skip cleanly when the `pose` extra is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from clipmg import data as cdata
from clipmg.errors import DataError, ModelError
from clipmg.pose import cache as kcache
from clipmg.pose.hands import hand_boxes_for_model, hand_boxes_in_image, image_boxes_to_square_view
from clipmg.pose.keypoints import (
    ASPECT,
    HAND_FOUND,
    HANDS,
    KEYPOINT_DIM,
    POSE,
    POSE_FOUND,
    empty_keypoints,
    import_mediapipe,
    person_found,
)

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "imigue" / "samples"


def test_layout_covers_the_vector_once():
    covered = np.zeros(KEYPOINT_DIM, dtype=int)
    for part in (POSE, *HANDS):
        covered[part] += 1
    for index in (POSE_FOUND, *HAND_FOUND, ASPECT):
        covered[index] += 1
    assert (covered == 1).all()
    assert POSE.stop - POSE.start == 33 * 4 and all(h.stop - h.start == 21 * 3 for h in HANDS)


def test_missing_mediapipe_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(ModelError, match=r"pip install -c constraints.txt -e \.\[pose\]"):
        import_mediapipe()


class FakeExtractor:
    """Counts calls; the vector's first value is the image's mean, so rows can be checked."""

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def extract(self, image):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # a killed run
        self.calls += 1
        vector = empty_keypoints(image.shape[1] / image.shape[0])
        vector[0] = image.mean()
        vector[POSE_FOUND] = 1.0
        return vector


def write_images(folder: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        (folder / "1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), 10 * i, dtype=np.uint8)).save(folder / "1" / f"{i}.png")
        paths.append(f"1/{i}.png")
    return paths


def test_cache_resumes_where_a_killed_extraction_stopped(tmp_path):
    paths = write_images(tmp_path, 10)
    files = [tmp_path / p for p in paths]
    cache = kcache.KeypointCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        kcache.extract_into_cache(cache, paths, files, make_extractor=lambda: FakeExtractor(fail_after=7), chunk=3)
    fresh = kcache.KeypointCache(tmp_path / "cache")  # a new process reads what was written
    assert len(fresh.table()) == 6  # two whole chunks survived the kill
    extractor = FakeExtractor()
    assert kcache.extract_into_cache(fresh, paths, files, make_extractor=lambda: extractor, chunk=3) == 4
    assert extractor.calls == 4
    assert len(fresh.parts()) == 1  # merged once complete
    values = kcache.KeypointCache(tmp_path / "cache").get(paths)
    np.testing.assert_allclose(values[:, 0], [10 * i for i in range(10)])
    np.testing.assert_allclose(values[:, ASPECT], 1.5)
    assert kcache.extract_into_cache(fresh, paths, files, make_extractor=FakeExtractor) == 0


def test_cache_rejects_torn_parts_and_other_layouts(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "part-1.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="part-1.npz cannot be read"):
        kcache.KeypointCache(folder).table()
    (folder / "part-1.npz").unlink()
    (folder / "meta.json").write_text('{"layout": 0, "keypoint_dim": 10}')
    with pytest.raises(DataError, match="delete the folder"):
        kcache.KeypointCache(folder).table()


def test_loader_caches_beside_the_images_and_handles_missing_files(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "training", 3)
    made = []

    def make():
        made.append(FakeExtractor())
        return made[-1]

    monkeypatch.setattr(kcache, "KeypointExtractor", lambda settings=None: make())
    roots = [tmp_path / "elsewhere", tmp_path / "training"]
    rows = kcache.keypoints_for_paths([*paths, "1/missing.png", str(tmp_path / "training" / paths[0])], roots)
    assert rows.shape == (5, KEYPOINT_DIM)
    np.testing.assert_allclose(rows[:3, 0], [0, 10, 20])
    assert not person_found(rows[3:4]).any() and person_found(rows[[0, 1, 2, 4]]).all()
    assert (tmp_path / "training" / kcache.CACHE_DIR_NAME).is_dir()
    assert set(kcache.KeypointCache(tmp_path / "training" / kcache.CACHE_DIR_NAME).table()) == set(paths)
    # a second call extracts nothing; an override folder gets its own table keyed by Path
    kcache.keypoints_for_paths(paths, roots)
    assert sum(e.calls for e in made) == 4
    kcache.keypoints_for_paths(paths, roots, {"keypoints": str(tmp_path / "override")})
    assert set(kcache.KeypointCache(tmp_path / "override").table()) == set(paths)


def synthetic_hand(vector: np.ndarray, slot: int, xs, ys) -> None:
    points = np.zeros((21, 3), dtype=np.float32)
    points[:, 0] = np.linspace(*xs, 21)
    points[:, 1] = np.linspace(*ys, 21)
    vector[HANDS[slot]] = points.ravel()
    vector[HAND_FOUND[slot]] = 1.0


def test_hand_boxes_are_square_grown_and_clipped():
    vector = empty_keypoints(aspect=2.0)  # e.g. 200 x 100 pixels
    synthetic_hand(vector, 0, (0.40, 0.45), (0.40, 0.60))  # 10 x 20 px
    synthetic_hand(vector, 1, (0.95, 1.00), (0.90, 1.00))  # at the corner
    boxes = hand_boxes_in_image(vector[None], margin=0.5)[0]
    width, height = 200, 100
    # slot 0: centre (85, 50) px, side 20 * (1 + 2 * 0.5) = 40 px
    np.testing.assert_allclose(boxes[0] * [width, height, width, height, 1], [65, 30, 105, 70, 1], atol=1e-3)
    assert boxes[1, 4] == 1 and boxes[1, 2] == 1.0 and boxes[1, 3] == 1.0  # clipped to the image
    assert not hand_boxes_in_image(empty_keypoints(2.0)[None])[0, :, 4].any()
    # in the centre square (pixels 50..150) of the 200 x 100 frame
    view = image_boxes_to_square_view(boxes[None], np.array([2.0]))[0]
    np.testing.assert_allclose(view[0], [(65 - 50) / 100, 0.3, (105 - 50) / 100, 0.7, 1], atol=1e-5)
    assert view[1, 4] == 0 and not view[1, :4].any()  # the corner hand is outside the square
    np.testing.assert_allclose(hand_boxes_for_model(vector[None], margin=0.5), view[None])


# ----------------------------------------------------------------- MediaPipe itself
def test_mediapipe_finds_nobody_in_a_blank_image():
    pytest.importorskip("mediapipe")
    from clipmg.pose.keypoints import KeypointExtractor

    with KeypointExtractor() as extractor:
        vector = extractor.extract(np.full((240, 320, 3), 128, dtype=np.uint8))
    assert vector.shape == (KEYPOINT_DIM,) and vector.dtype == np.float32
    assert not person_found(vector[None]).any()
    assert np.count_nonzero(vector) == 1 and vector[ASPECT] == pytest.approx(320 / 240)
    with pytest.raises(ModelError, match="uint8 RGB"):
        extractor.extract(np.zeros((10, 10), dtype=np.uint8))


def test_mediapipe_extraction_through_the_cache_on_demo_frames(tiny_dataset, tmp_path):
    pytest.importorskip("mediapipe")
    frames = cdata.read_metadata(tiny_dataset / "training" / "train.xlsx").head(4)
    rows = kcache.keypoints_for_paths(list(frames["path"]), [tiny_dataset / "training"],
                                      {"keypoints": str(tmp_path / "kp")})
    assert rows.shape == (4, KEYPOINT_DIM) and np.isfinite(rows).all()
    np.testing.assert_allclose(rows[:, ASPECT], 1.0)
    found = rows[:, POSE_FOUND] > 0
    coords = rows[found][:, POSE].reshape(-1, 33, 4)
    assert ((coords[..., 3] >= 0) & (coords[..., 3] <= 1)).all()  # visibility is a probability


def sample_frames(every: int = 6) -> list[tuple[str, np.ndarray]]:
    """Every `every`-th frame of each real sample clip (GIFs decoded with PIL)."""
    if not SAMPLES.is_dir() or not list(SAMPLES.glob("*.gif")):
        pytest.skip(f"no real sample clips in {SAMPLES}")
    frames = []
    for gif in sorted(SAMPLES.glob("*.gif")):
        with Image.open(gif) as image:
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                if index % every == 0:
                    frames.append((gif.name, np.asarray(frame.convert("RGB"))))
    return frames


def test_mediapipe_finds_the_person_and_hands_in_real_frames():
    pytest.importorskip("mediapipe")
    from clipmg.pose.keypoints import KeypointExtractor

    frames = sample_frames()
    with KeypointExtractor() as extractor:
        vectors = np.stack([extractor.extract(pixels) for _, pixels in frames])
    names = np.array([name for name, _ in frames])
    assert (vectors[:, POSE_FOUND] == 1).all(), names[vectors[:, POSE_FOUND] != 1]
    hands = vectors[:, list(HAND_FOUND)].sum(axis=1)
    # measured on all 152 frames: a hand in 62% (scratching neck) to 100% (rubbing eyes) of them
    assert (hands >= 1).mean() >= 0.5
    assert all((hands[names == name] >= 1).any() for name in set(names))
    boxes = hand_boxes_in_image(vectors)
    assert (boxes[..., 4].sum(axis=1) == hands).all()
    # each box holds its hand's landmarks
    for slot in (0, 1):
        valid = boxes[:, slot, 4] > 0
        points = vectors[valid][:, HANDS[slot]].reshape(-1, 21, 3)[..., :2]
        box = boxes[valid, slot]
        assert ((points[..., 0] >= box[:, None, 0]) & (points[..., 0] <= box[:, None, 2])
                | (points[..., 0] < 0) | (points[..., 0] > 1)).all()
        assert ((points[..., 1] >= box[:, None, 1]) & (points[..., 1] <= box[:, None, 3])
                | (points[..., 1] < 0) | (points[..., 1] > 1)).all()


def test_extract_command_and_the_comparison_rows(tiny_dataset, tmp_path):
    pytest.importorskip("mediapipe")
    from clipmg.jobs.approaches import pose as approaches
    from clipmg.jobs.compare import compare
    from clipmg.pose.extract import extract_keypoints

    metadata = tiny_dataset / "training" / "train.xlsx"
    summary = extract_keypoints(metadata, cache=tmp_path / "kp", limit=6)
    assert summary["frames"] == 6 and 0 <= summary["person_found"] <= 1
    assert len(kcache.KeypointCache(tmp_path / "kp").table()) == 6
    table = compare(metadata, tiny_dataset / "Clip_label.csv", None, [approaches.POSE_FUSION, approaches.HAND_CROPS],
                    tmp_path / "compare", {"keypoints": str(tmp_path / "kp"), "device": "cpu"}, mode="quick")
    assert list(table["approach"]) == ["pose-fusion", "hand-crops"]
    for column in ("top1", "top5", "balanced_accuracy", "clip_top1"):
        assert table[column].between(0, 1).all()
    assert len(kcache.KeypointCache(tmp_path / "kp").table()) == 32  # every frame now cached


# ----------------------------------------------------------------- horizontal flips
def found_keypoints(seed: int = 0, aspect: float = 4 / 3) -> np.ndarray:
    """A vector with a found pose and a found "Left" hand (slot 0); the "Right" hand is missing."""
    rng = np.random.default_rng(seed)
    vector = empty_keypoints(aspect)
    vector[POSE] = rng.uniform(0.05, 0.95, POSE.stop - POSE.start)
    vector[POSE_FOUND] = 1.0
    synthetic_hand(vector, 0, (0.20, 0.30), (0.50, 0.65))
    vector[HANDS[0]] += rng.uniform(0, 0.01, HANDS[0].stop - HANDS[0].start).astype(np.float32)
    return vector


def test_mirrored_keypoints_swap_sides_map_x_to_one_minus_x_and_undo_themselves():
    from clipmg.pose.keypoints import hand_landmarks, mirror_keypoints, pose_landmarks

    vector = found_keypoints()
    before = vector.copy()
    mirrored = mirror_keypoints(vector)
    np.testing.assert_array_equal(vector, before)  # a new array; the input is left alone
    pose, flipped = pose_landmarks(vector), pose_landmarks(mirrored)
    one = np.float32(1)
    # the person's left shoulder (11) is where the right one (12) was, mirrored; z, visibility travel
    np.testing.assert_array_equal(flipped[11], [one - pose[12, 0], *pose[12, 1:]])
    np.testing.assert_array_equal(flipped[12], [one - pose[11, 0], *pose[11, 1:]])
    np.testing.assert_array_equal(flipped[0], [one - pose[0, 0], *pose[0, 1:]])  # the nose stays
    np.testing.assert_array_equal(flipped[9], [one - pose[10, 0], *pose[10, 1:]])  # mouth_left <- mouth_right
    # the found "Left" hand becomes the "Right" one, mirrored; the missing slot stays missing, zeros
    assert mirrored[HAND_FOUND[1]] == 1 and mirrored[HAND_FOUND[0]] == 0
    np.testing.assert_array_equal(hand_landmarks(mirrored, 1)[:, 0], one - hand_landmarks(vector, 0)[:, 0])
    np.testing.assert_array_equal(hand_landmarks(mirrored, 1)[:, 1:], hand_landmarks(vector, 0)[:, 1:])
    assert not mirrored[HANDS[0]].any()
    assert mirrored[POSE_FOUND] == 1 and mirrored[ASPECT] == vector[ASPECT]  # the aspect ratio is unchanged
    # twice is the identity (up to the rounding of 1 - (1 - x) in float32)
    np.testing.assert_allclose(mirror_keypoints(mirrored), vector, rtol=0, atol=1e-7)
    # rows of a batch mirror like single vectors
    batch = np.stack([vector, found_keypoints(1)])
    np.testing.assert_array_equal(mirror_keypoints(batch), np.stack([mirrored, mirror_keypoints(batch[1])]))


def test_missing_parts_stay_exactly_as_they_are_when_mirrored():
    from clipmg.pose.keypoints import mirror_keypoints

    nobody = empty_keypoints(1.5)
    np.testing.assert_array_equal(mirror_keypoints(nobody), nobody)  # zeros are not turned into x = 1
    hands_only = found_keypoints()
    hands_only[POSE] = 0.0
    hands_only[POSE_FOUND] = 0.0
    mirrored = mirror_keypoints(hands_only)
    assert not mirrored[POSE].any() and mirrored[POSE_FOUND] == 0
    # a pose block MediaPipe flagged as not found is left untouched, whatever its values
    flagged_off = found_keypoints()
    flagged_off[POSE_FOUND] = 0.0
    np.testing.assert_array_equal(mirror_keypoints(flagged_off)[POSE], flagged_off[POSE])


def test_pose_mirror_pairs_are_mediapipes_left_and_right_landmarks():
    from clipmg.pose.keypoints import POSE_LANDMARK_NAMES, POSE_MIRROR

    pairs = {(1, 4), (2, 5), (3, 6), (7, 8), (9, 10)} | {(i, i + 1) for i in range(11, 33, 2)}
    expected = {0: 0} | {a: b for a, b in pairs} | {b: a for a, b in pairs}
    assert POSE_MIRROR == tuple(expected[i] for i in range(33))
    for index, partner in enumerate(POSE_MIRROR):
        name = POSE_LANDMARK_NAMES[index]
        assert POSE_LANDMARK_NAMES[partner] == name.replace("left", "@").replace("right", "left").replace("@", "right")


def test_pose_landmark_names_are_mediapipes():
    mediapipe = pytest.importorskip("mediapipe")
    from clipmg.pose.keypoints import POSE_LANDMARK_NAMES

    landmarks = sorted(mediapipe.solutions.pose.PoseLandmark, key=lambda landmark: landmark.value)
    assert tuple(landmark.name.lower() for landmark in landmarks) == POSE_LANDMARK_NAMES


def test_mirrored_hand_boxes_are_the_boxes_of_the_mirrored_keypoints():
    from clipmg.pose.hands import mirror_hand_boxes
    from clipmg.pose.keypoints import mirror_keypoints

    vector = empty_keypoints(aspect=2.0)
    synthetic_hand(vector, 0, (0.40, 0.45), (0.40, 0.60))
    vectors = np.stack([vector, found_keypoints(2, aspect=0.75), empty_keypoints(1.0)])
    boxes = hand_boxes_for_model(vectors)
    mirrored = mirror_hand_boxes(boxes)
    np.testing.assert_allclose(mirrored, hand_boxes_for_model(mirror_keypoints(vectors)), rtol=0, atol=1e-6)
    # slot 0's box (x 0.3 .. 0.55 of the square view, say) is now slot 1's, at 1 - x1 .. 1 - x0
    np.testing.assert_array_equal(mirrored[0, 1], [1 - boxes[0, 0, 2], boxes[0, 0, 1], 1 - boxes[0, 0, 0],
                                                   boxes[0, 0, 3], 1])
    assert not mirrored[0, 0].any() and not mirrored[2].any()  # missing boxes stay zeros
    np.testing.assert_allclose(mirror_hand_boxes(mirrored), boxes, rtol=0, atol=1e-7)


def marked_frame(root: Path, name: str, marks: dict, size=(48, 64)) -> str:
    """A black PNG with a 3 x 3 block of `colour` centred on each `(x, y)` pixel of `marks`."""
    pixels = np.zeros((*size, 3), dtype=np.uint8)
    for (x, y), colour in marks.items():
        pixels[y - 1:y + 2, x - 1:x + 2] = colour
    Image.fromarray(pixels).save(root / name)
    return name


def pixel_of(landmark: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """(row, column) of the pixel whose centre is at normalised (x, y): x = (column + 0.5) / width."""
    return round(float(landmark[1]) * height - 0.5), round(float(landmark[0]) * width - 0.5)


def test_a_flipped_frame_has_its_mirrored_keypoints_on_the_marks(tmp_path):
    """The wrist keypoint labelled left is painted red, the right one green. In a flipped item
    the keypoints must sit on the marks of the flipped image: the left-wrist keypoint on the
    green wrist (a mirrored right arm is a left arm, as MediaPipe would label it), the right one
    on red; in a plain item they stay on their own colours."""
    import pandas as pd
    import torch

    import clipmg.pose.fields  # noqa: F401  (registers the "keypoints" field and its mirror)
    from clipmg.pose.keypoints import pose_landmarks

    height, width = 48, 64
    red, green = (255, 0, 0), (0, 255, 0)
    vector = found_keypoints()
    left_wrist, right_wrist = (10, 30), (45, 12)  # pixel (x, y)
    for landmark, (x, y) in ((15, left_wrist), (16, right_wrist)):
        vector[POSE.start + 4 * landmark:POSE.start + 4 * landmark + 2] = [(x + 0.5) / width, (y + 0.5) / height]
    name = marked_frame(tmp_path, "frame.png", {left_wrist: red, right_wrist: green})
    original = np.asarray(Image.open(tmp_path / name).convert("RGB"))
    frames = pd.DataFrame({"path": [name], "class_id": [1]})
    dataset = cdata.FrameDataset(frames, tmp_path, lambda image: torch.from_numpy(image.copy()),
                                 extra_fields={"keypoints": vector[None]}, hflip=True)
    flips = set()
    for seed in range(8):
        dataset.set_random_seed(seed)
        item = dataset[0]
        image, landmarks = item["image"].numpy(), pose_landmarks(item["keypoints"].numpy())
        flipped = np.array_equal(image, original[:, ::-1])
        assert flipped or np.array_equal(image, original)
        flips.add(flipped)
        left_colour, right_colour = (green, red) if flipped else (red, green)
        assert tuple(image[pixel_of(landmarks[15], height, width)]) == left_colour
        assert tuple(image[pixel_of(landmarks[16], height, width)]) == right_colour
    assert flips == {False, True}  # both flipped and plain items were checked


def test_mediapipe_on_a_flipped_real_frame_finds_the_mirrored_keypoints():
    """The mirror mapping as MediaPipe sees it: keypoints extracted from a flipped frame are the
    mirrored keypoints of the frame (left and right swapped, hands relabelled)."""
    pytest.importorskip("mediapipe")
    from clipmg.pose.keypoints import (
        KeypointExtractor,
        hand_landmarks,
        mirror_keypoints,
        pose_landmarks,
    )

    frames = sample_frames(every=12)
    with KeypointExtractor() as extractor:
        plain = np.stack([extractor.extract(pixels) for _, pixels in frames])
        flipped = np.stack([extractor.extract(np.ascontiguousarray(pixels[:, ::-1])) for _, pixels in frames])
    mirrored = mirror_keypoints(plain)
    assert (plain[:, POSE_FOUND] == 1).all() and (flipped[:, POSE_FOUND] == 1).all()
    error = np.median(np.abs(pose_landmarks(mirrored)[..., :2] - pose_landmarks(flipped)[..., :2]), axis=(1, 2))
    only_x = pose_landmarks(plain).copy()
    only_x[..., 0] = 1 - only_x[..., 0]  # mirrored without swapping left and right
    unswapped = np.median(np.abs(only_x[..., :2] - pose_landmarks(flipped)[..., :2]), axis=(1, 2))
    assert (error < 0.03).all() and (error < unswapped).all(), (error, unswapped)
    # measured: 0.006-0.019 swapped, 0.026-0.145 unswapped
    matched = 0
    for slot in (0, 1):
        both = (mirrored[:, HAND_FOUND[slot]] == 1) & (flipped[:, HAND_FOUND[slot]] == 1)
        difference = np.abs(hand_landmarks(mirrored[both], slot) - hand_landmarks(flipped[both], slot))[..., :2]
        assert (np.median(difference, axis=(1, 2)) < 0.01).all()
        matched += int(both.sum())
    assert matched >= 0.7 * mirrored[:, list(HAND_FOUND)].sum()  # most hands keep their (swapped) label
