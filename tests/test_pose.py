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
    from clipmg.compare import compare
    from clipmg.pose import approaches
    from clipmg.pose.commands import extract_keypoints

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
