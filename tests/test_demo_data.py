"""The demo data generator writes the real iMiGUE layout, readable by the data layer."""

from __future__ import annotations

import hashlib

import numpy as np
import openpyxl
import pytest
from PIL import Image

from clipmg.data import check_dataset, default_image_root, load_labels, read_metadata, split_dataset
from clipmg.errors import DataError
from clipmg.synthetic import IMIGUE_RAW_CLASS_NAMES, make_demo_data
from clipmg.synthetic.generate import clips_per_class
from clipmg.synthetic.poses import POSES

SMALL = dict(classes=4, clips=8, frames_per_clip=2, size=64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, make_demo_data(out, seed=0, **SMALL)


def test_layout_and_returned_summary(demo):
    out, info = demo
    assert (out / "Clip_label.csv").is_file()
    assert (out / "training" / "train.xlsx").is_file()
    assert info["metadata"] == str(out / "training" / "train.xlsx")
    assert info["frames"] == 16 and info["clips"] == 8 and info["classes"] == 4
    assert info["class_clips"] == {1: 2, 2: 2, 3: 2, 4: 2}
    assert info["frames_per_second"] > 0
    images = sorted(
        p.relative_to(out / "training").as_posix() for p in (out / "training").rglob("*.jpg")
    )
    assert len(images) == 16
    assert all(p.split("/")[0] in {"1", "2", "3", "4"} for p in images)


def test_labels_file_is_the_real_quirky_one(demo):
    out, _ = demo
    raw = (out / "Clip_label.csv").read_bytes()
    assert (
        raw.startswith(b"id,name\r\n1,Turtle neck\r\n")
        and b"4,Touching or scratching head \r\n" in raw
    )
    assert load_labels(out / "Clip_label.csv")[3] == "Touch hat"


def test_metadata_sheet_has_the_real_columns_and_captions(demo):
    out, _ = demo
    sheet = openpyxl.load_workbook(out / "training" / "train.xlsx").worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("Path", "Class", "Video ID", "Frame ID", "Caption")
    assert len(rows) == 17
    for path, class_id, clip, frame, caption in rows[1:]:
        assert path == f"{class_id}/{clip}.{frame}.jpg"
        assert caption == IMIGUE_RAW_CLASS_NAMES[class_id - 1]
        assert clip >= 1000 and frame in (0, 1)
    assert any(caption.endswith(" ") for *_, caption in rows[1:])


def test_read_metadata_and_check_pass(demo):
    out, _ = demo
    metadata = out / "training" / "train.xlsx"
    assert default_image_root(metadata) == (out / "training").resolve()
    df = read_metadata(metadata, out / "Clip_label.csv")
    assert len(df) == 16 and df["video_id"].nunique() == 8
    assert all(frames == [0, 1] for frames in df.groupby("video_id")["frame_id"].apply(sorted))
    report = check_dataset(metadata, out / "Clip_label.csv")
    assert report.ok, report.to_text()
    assert report.missing_images == [] and report.unreadable_images == []
    assert split_dataset(df).report["leakage"] == 0.0


def test_images_are_rgb_of_the_asked_size(demo):
    out, _ = demo
    image = Image.open(next((out / "training" / "1").glob("*.jpg")))
    assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 64)


def file_digests(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in folder.rglob("*.jpg")
    }


def test_deterministic_given_seed(tmp_path, demo):
    out, _ = demo
    make_demo_data(tmp_path / "again", seed=0, **SMALL)
    assert file_digests(tmp_path / "again" / "training") == file_digests(out / "training")
    make_demo_data(tmp_path / "other", seed=1, **SMALL)
    assert file_digests(tmp_path / "other" / "training") != file_digests(out / "training")


def test_frames_of_a_clip_are_near_duplicates_and_clips_differ(demo):
    out, _ = demo
    df = read_metadata(out / "training" / "train.xlsx")
    root = out / "training"

    def pixels(path):
        return np.asarray(Image.open(root / path), dtype=np.float32)

    first, second = df.iloc[0], df.iloc[1]
    assert first["video_id"] == second["video_id"]
    other = df[df["video_id"] != first["video_id"]].iloc[0]
    within = np.abs(pixels(first["path"]) - pixels(second["path"])).mean()
    between = np.abs(pixels(first["path"]) - pixels(other["path"])).mean()
    assert within < between / 2


def test_every_class_has_a_pose_and_clip_counts_are_zipf_like():
    assert sorted(POSES) == list(range(1, 33))
    counts = clips_per_class(12, 240, np.random.default_rng(0))
    assert counts.sum() == 240 and counts.min() >= 2 and counts.max() > 3 * counts.min()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(classes=33), "classes must be 1..32"),
        (dict(classes=4, clips=7), "at least 2 clips per class"),
        (dict(frames_per_clip=0), "frames_per_clip"),
        (dict(image_format="gif"), "image_format"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        make_demo_data(tmp_path, **kwargs)


# ------------------------------------------------------------------------------ moving clips
MOTION_SMALL = dict(classes=5, clips=10, frames_per_clip=8, size=48)


def test_motion_moves_classes_1_to_4_and_leaves_the_others_as_they_were(tmp_path):
    moving = make_demo_data(tmp_path / "moving", seed=0, motion=True, **MOTION_SMALL)
    still = make_demo_data(tmp_path / "still", seed=0, **MOTION_SMALL)
    assert sorted(moving["motion"]) == [1, 2, 3, 4] and still["motion"] == {}
    moved, kept = file_digests(tmp_path / "moving" / "training"), file_digests(tmp_path / "still" / "training")
    assert moved.keys() == kept.keys()
    for path, digest in moved.items():
        assert (digest == kept[path]) == (int(path.split("/")[0]) >= 5), path


def test_a_moving_clip_goes_from_one_pose_to_the_other_in_the_order_of_its_class():
    from clipmg.synthetic.figures import clip_look, draw_frame
    from clipmg.synthetic.motion import MOTIONS, motion_frames

    def drawn(images):
        return [np.asarray(image) for image in images]

    def still(pose, seed, frames=8, canvas=96):  # the same clip standing in one pose
        rng = np.random.default_rng(seed)
        look = clip_look(1, rng, canvas, pose=pose)
        return drawn(draw_frame(look, rng, canvas) for _ in range(frames))

    for class_id, first, last in ((1, "start", "end"), (2, "end", "start"), (3, "start", "start"),
                                  (4, "start", "start")):
        motion = MOTIONS[class_id]
        frames = drawn(motion_frames(class_id, 8, np.random.default_rng(5), 96))
        assert np.array_equal(frames[0], still(getattr(motion, first), 5)[0]), class_id
        assert np.array_equal(frames[-1], still(getattr(motion, last), 5)[-1]), class_id
        assert not np.array_equal(frames[0], frames[3])  # it moves in between


def test_paired_movements_show_the_same_poses_in_another_order():
    from clipmg.data import clip_positions
    from clipmg.synthetic.motion import MOTIONS

    def phases(class_id, frames=8, k=8):
        times = clip_positions(frames, k) / (frames - 1)
        return np.round([MOTIONS[class_id].phase(t) for t in times], 6)

    for a, b in ((1, 2), (3, 4)):
        assert sorted(phases(a)) == pytest.approx(sorted(phases(b)), abs=1e-6)  # frame averaging sees one set
        assert not np.allclose(phases(a), phases(b))  # the order tells them apart
    assert MOTIONS[1].start == MOTIONS[2].start and MOTIONS[1].end == MOTIONS[2].end


@pytest.mark.parametrize("kwargs", [dict(classes=3, clips=6, frames_per_clip=8), dict(frames_per_clip=4)])
def test_motion_needs_four_classes_and_eight_frames(tmp_path, kwargs):
    with pytest.raises(DataError, match="motion needs"):
        make_demo_data(tmp_path, motion=True, **kwargs)


# ------------------------------------------------------------------------------ people
def test_subjects_share_out_the_clips_and_a_subject_split_keeps_people_apart(tmp_path):
    info = make_demo_data(tmp_path, seed=0, subjects=3, **{**SMALL, "clips": 12})
    assert info["subjects"] == 3
    df = read_metadata(tmp_path / "training" / "train.xlsx", tmp_path / "Clip_label.csv")
    assert sorted(df["Subject"].astype(int).unique()) == [1, 2, 3]
    assert (df.groupby("video_id")["Subject"].nunique() == 1).all()
    split = split_dataset(df, by="subject", subject_column="Subject", val_fraction=0.34)
    train_people = set(df["Subject"].iloc[split.train_index])
    assert train_people and not train_people & set(df["Subject"].iloc[split.val_index])


def test_one_person_keeps_one_look_across_classes_and_clips():
    from clipmg.synthetic.figures import clip_look
    from clipmg.synthetic.generate import person_seed

    def look(class_id, clip, person):
        return clip_look(class_id, np.random.default_rng([0, clip]), 64, person_seed=person_seed(0, person))

    first, second, other = look(1, 1000, person=1), look(5, 1001, person=1), look(1, 1000, person=2)
    assert (first.skin, first.shirt, first.hair, first.table_y) == (second.skin, second.shirt, second.hair,
                                                                    second.table_y)
    assert np.array_equal(np.asarray(first.backdrop), np.asarray(second.backdrop))
    assert first.pose != second.pose
    assert (first.skin, first.shirt) != (other.skin, other.shirt)


def test_subjects_must_be_between_one_and_the_clips(tmp_path):
    with pytest.raises(DataError, match="subjects"):
        make_demo_data(tmp_path, subjects=0, **SMALL)
