"""Labels, metadata, images, transforms, dataset, sampler and check, on hand-made files."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clipmg.data import (
    Columns,
    FrameDataset,
    balanced_sample_weights,
    check_dataset,
    class_counts,
    class_index_map,
    clean_class_name,
    collate_frames,
    create_transform,
    default_image_root,
    load_image,
    load_labels,
    normalize_images,
    read_metadata,
    transform_for_model,
)
from clipmg.errors import DataError, ImageError

HEADER = ["Path", "Class", "Video ID", "Frame ID", "Caption"]
LABELS_CSV = "id,name\r\n1,Turtle neck\r\n2,Touch Hat \r\n3,Scraching back\r\n"


def write_labels(folder, text=LABELS_CSV, name="Clip_label.csv", encoding="utf-8"):
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def write_csv(path, rows, header=HEADER):
    pd.DataFrame(rows, columns=header).to_csv(path, index=False)
    return path


def write_xlsx(path, rows, header=HEADER):
    pd.DataFrame(rows, columns=header).to_excel(path, index=False)
    return path


GOOD_ROWS = [
    ["1/1000.0.jpg", 1, 1000, 0, "Turtle neck"],
    ["1/1000.1.jpg", 1, 1000, 1, "Turtle neck "],
    ["2/1001.0.jpg", 2, 1001, 0, "touch hat"],
    ["3/1002.0.jpg", 3, 1002, 0, "Scraching back"],
    ["3/1003.0.jpg", 3, 1003, 0, "Scratching  back "],
]


def make_images(root, paths, size=(24, 16)):
    for index, relative in enumerate(paths):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10 * index, 100, 200)).save(path)


# --- labels ---------------------------------------------------------------------------------


def test_clean_class_name_fixes_spacing_spelling_and_case_only():
    assert clean_class_name("Scraching back") == "Scratching back"
    assert clean_class_name(" scraching or touching arms ") == "Scratching or touching arms"
    assert clean_class_name("Dustoff clothes") == "Dust off clothes"
    assert clean_class_name("touching jaw") == "Touching jaw"
    assert clean_class_name("Touch Hat") == "Touch hat"
    assert clean_class_name("Playing with jewelries") == "Playing with jewelries"
    assert clean_class_name("\ufeffTurtle   neck\t") == "Turtle neck"


def test_labels_with_bom_crlf_and_trailing_spaces_load(tmp_path):
    path = write_labels(
        tmp_path, "\ufeffID , Name\r\n2,Touch Hat \r\n1,Turtle neck\r\n3,Scraching back\r\n\r\n"
    )
    assert load_labels(path) == {1: "Turtle neck", 2: "Touch hat", 3: "Scratching back"}


def test_labels_without_header_load(tmp_path):
    assert load_labels(write_labels(tmp_path, "1,Turtle neck\n2,Head up\n")) == {
        1: "Turtle neck",
        2: "Head up",
    }


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id,name\n1,Turtle neck\n1,Head up\n", "row 3: class id 1 appears twice"),
        ("id,name\n1,Turtle neck\nx,Head up\n", "row 3, column 'id': 'x' is not an integer"),
        ("id,name\n1,Turtle neck\n2,turtle  NECK \n", "row 3: class name"),
        ("id,name\n1,\n", "row 2: expected 'id,name'"),
        ("class,label\n1,Turtle neck\n", "expected the columns id,name"),
    ],
)
def test_bad_label_files_name_the_row(tmp_path, text, expected):
    with pytest.raises(DataError, match="Clip_label.csv") as error:
        load_labels(write_labels(tmp_path, text))
    assert expected in str(error.value)


def test_missing_label_file(tmp_path):
    with pytest.raises(DataError, match="label file not found"):
        load_labels(tmp_path / "nope.csv")


def test_class_index_map_from_ids_labels_or_mapping():
    assert class_index_map([32, 1, 7, 7]) == {1: 0, 7: 1, 32: 2}
    assert class_index_map({3: "c", 1: "a"}) == {1: 0, 3: 1}
    assert class_index_map({5: 1, 9: 0}) == {5: 1, 9: 0}


# --- metadata -------------------------------------------------------------------------------


@pytest.mark.parametrize("writer, suffix", [(write_csv, ".csv"), (write_xlsx, ".xlsx")])
def test_read_metadata_standard_columns(tmp_path, writer, suffix):
    labels = write_labels(tmp_path)
    path = writer(tmp_path / f"train{suffix}", GOOD_ROWS)
    df = read_metadata(path, labels)
    assert list(df.columns) == ["path", "class_id", "video_id", "frame_id", "caption", "row"]
    assert df["row"].tolist() == [2, 3, 4, 5, 6]
    assert df["video_id"].tolist() == ["1000", "1000", "1001", "1002", "1003"]
    assert df["class_id"].dtype == np.int64 and df["frame_id"].dtype == np.int64
    assert df["caption"].iloc[1] == "Turtle neck"  # stripped


def test_read_metadata_without_labels_and_with_renamed_columns(tmp_path):
    header = ["file", "label", "clip", "frame", "text", "subject"]
    rows = [[*row, "s1"] for row in GOOD_ROWS]
    path = write_csv(tmp_path / "meta.csv", rows, header)
    columns = Columns(path="file", class_="label", video="clip", frame="frame", caption="text")
    df = read_metadata(path, columns=columns)
    assert len(df) == 5 and df["subject"].tolist() == ["s1"] * 5


def test_without_caption_column_captions_are_class_names(tmp_path):
    path = write_csv(tmp_path / "m.csv", [r[:4] for r in GOOD_ROWS], HEADER[:4])
    df = read_metadata(path, write_labels(tmp_path))
    assert df["caption"].tolist() == [
        "Turtle neck",
        "Turtle neck",
        "Touch hat",
        "Scratching back",
        "Scratching back",
    ]


def test_column_names_match_ignoring_case_and_spaces(tmp_path):
    path = write_csv(
        tmp_path / "m.csv", GOOD_ROWS, ["path", "CLASS", "video  id", "Frame ID ", "caption"]
    )
    assert len(read_metadata(path)) == 5


def test_missing_column_lists_the_columns_there(tmp_path):
    path = write_csv(
        tmp_path / "m.csv",
        [r[:2] + r[3:] for r in GOOD_ROWS],
        ["Path", "Class", "Frame ID", "Caption"],
    )
    with pytest.raises(DataError) as error:
        read_metadata(path)
    message = str(error.value)
    assert "m.csv" in message and "'Video ID'" in message
    assert "'Path', 'Class', 'Frame ID', 'Caption'" in message


def test_caption_matching_no_class_names_the_row(tmp_path):
    rows = GOOD_ROWS + [["1/1004.0.jpg", 1, 1004, 0, "Dancing"]]
    path = write_xlsx(tmp_path / "train.xlsx", rows)
    with pytest.raises(DataError) as error:
        read_metadata(path, write_labels(tmp_path))
    assert "train.xlsx row 7, column 'Caption': 'Dancing' matches no class name" in str(error.value)


def test_short_caption_of_an_or_name_matches(tmp_path):
    labels = write_labels(
        tmp_path, "id,name\n1,Bulging face or deep breath\n2,Touching or scratching head\n"
    )
    rows = [["1/1.0.jpg", 1, 1, 0, "Bulging face"]]
    assert len(read_metadata(write_csv(tmp_path / "m.csv", rows), labels)) == 1


def test_caption_of_another_class_names_row_and_both_classes(tmp_path):
    rows = GOOD_ROWS + [["1/1004.0.jpg", 1, 1004, 0, "Touch hat"]]
    with pytest.raises(DataError) as error:
        read_metadata(write_csv(tmp_path / "m.csv", rows), write_labels(tmp_path))
    assert "row 7, column 'Caption': 'Touch hat' is class 2" in str(error.value)
    assert "column 'Class' says 1" in str(error.value)


def test_class_outside_labels_names_the_row(tmp_path):
    rows = GOOD_ROWS + [["33/1004.0.jpg", 33, 1004, 0, "Turtle neck"]]
    with pytest.raises(DataError) as error:
        read_metadata(write_csv(tmp_path / "m.csv", rows), write_labels(tmp_path))
    assert "row 7, column 'Class': class 33 is not in Clip_label.csv (ids 1..3)" in str(error.value)


def test_non_integer_class_names_the_row(tmp_path):
    rows = GOOD_ROWS + [["1/1004.0.jpg", "one", 1004, 0, "Turtle neck"]]
    with pytest.raises(DataError, match="row 7, column 'Class': 'one' is not an integer"):
        read_metadata(write_csv(tmp_path / "m.csv", rows))


def test_empty_and_nan_rows_are_errors_naming_the_row(tmp_path):
    rows = [
        GOOD_ROWS[0],
        [None] * 5,
        GOOD_ROWS[2],
        ["1/1005.0.jpg", 1, None, 0, "Turtle neck"],
        GOOD_ROWS[3],
    ]
    path = write_xlsx(tmp_path / "train.xlsx", rows)
    with pytest.raises(DataError) as error:
        read_metadata(path)
    message = str(error.value)
    assert "train.xlsx row 3: empty row" in message
    assert "train.xlsx row 5, column 'Video ID': empty cell" in message


def test_blank_csv_line_keeps_row_numbers_and_trailing_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "Path,Class,Video ID,Frame ID,Caption\n1/1.0.jpg,1,1,0,Turtle neck\n\n"
        "1/1.1.jpg,1,1,1,Turtle neck\n,,,,\n\n"
    )
    with pytest.raises(DataError, match=r"m.csv row 3: empty row") as error:
        read_metadata(path)
    assert "row 5" not in str(error.value)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(DataError, match="metadata file not found"):
        read_metadata(tmp_path / "train.xlsx")


def test_default_image_root(tmp_path):
    (tmp_path / "a" / "training" / "1").mkdir(parents=True)
    assert (
        default_image_root(tmp_path / "a" / "train.xlsx") == (tmp_path / "a" / "training").resolve()
    )
    assert (
        default_image_root(tmp_path / "a" / "training" / "train.xlsx")
        == (tmp_path / "a" / "training").resolve()
    )
    (tmp_path / "b" / "7").mkdir(parents=True)
    assert default_image_root(tmp_path / "b" / "meta.csv") == (tmp_path / "b").resolve()
    assert (
        default_image_root(tmp_path / "c" / "train.xlsx") == (tmp_path / "c" / "training").resolve()
    )


# --- images ---------------------------------------------------------------------------------


def assert_rgb(array, height, width):
    assert array.dtype == np.uint8 and array.shape == (height, width, 3)


def test_load_rgba_on_white(tmp_path):
    path = tmp_path / "a.png"
    pixels = np.zeros((6, 8, 4), np.uint8)
    pixels[:, :4] = (255, 0, 0, 255)  # opaque red; the rest fully transparent
    Image.fromarray(pixels, "RGBA").save(path)
    array = load_image(path)
    assert_rgb(array, 6, 8)
    assert tuple(array[0, 0]) == (255, 0, 0) and tuple(array[0, 7]) == (255, 255, 255)


def test_load_grayscale_and_palette(tmp_path):
    Image.new("L", (8, 6), 77).save(tmp_path / "g.png")
    Image.new("P", (8, 6), 3).save(tmp_path / "p.gif")
    array = load_image(tmp_path / "g.png")
    assert_rgb(array, 6, 8)
    assert tuple(array[0, 0]) == (77, 77, 77)
    assert_rgb(load_image(tmp_path / "p.gif"), 6, 8)


def test_load_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    array = load_image(tmp_path / "c.jpg")
    assert_rgb(array, 6, 8)
    assert array[0, 0, 0] > 200 and array[0, 0, 1] < 60  # red


def test_load_16_bit_png_scales_to_8_bits(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    array = load_image(tmp_path / "deep.png")
    assert_rgb(array, 1, 4)
    assert array[0, :, 0].tolist() == [0, 128, 255, 4]


def test_png_named_jpg_and_webp_load(tmp_path):
    Image.new("RGB", (8, 6), (1, 2, 3)).save(tmp_path / "really_png.jpg", format="PNG")
    Image.new("RGB", (8, 6), (200, 100, 50)).save(tmp_path / "w.webp", lossless=True)
    assert tuple(load_image(tmp_path / "really_png.jpg")[0, 0]) == (1, 2, 3)
    assert tuple(load_image(tmp_path / "w.webp")[0, 0]) == (200, 100, 50)


def test_exif_orientation_rotates(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 128, 0)).save(tmp_path / "rot.jpg", exif=exif)
    assert_rgb(load_image(tmp_path / "rot.jpg"), 40, 20)


def test_jpeg_draft_decodes_smaller_but_not_below_max_size(tmp_path):
    Image.new("RGB", (640, 360), (9, 9, 9)).save(tmp_path / "big.jpg")
    small = load_image(tmp_path / "big.jpg", max_size=80)
    assert small.shape == (90, 160, 3)
    assert load_image(tmp_path / "big.jpg").shape == (360, 640, 3)


def jpeg_bytes(size=(64, 48)):
    buffer = io.BytesIO()
    Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    ).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("content", [jpeg_bytes()[:600], b"not an image at all"])
def test_truncated_or_corrupt_image_names_the_file(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="bad.jpg"):
        load_image(path)


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(ImageError, match="image not found: .*gone.jpg"):
        load_image(tmp_path / "gone.jpg")


# --- transforms -----------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
def test_transform_output_shape_and_dtype(train):
    transform = create_transform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=train, hflip=True)
    for shape in [(72, 128, 3), (128, 72, 3), (20, 20, 3)]:
        out = transform(np.full(shape, 128, np.uint8))
        assert (
            isinstance(out, torch.Tensor)
            and out.dtype == torch.float32
            and out.shape == (3, 32, 32)
        )


def test_eval_transform_is_resize_center_crop_normalise():
    image = np.zeros((60, 120, 3), np.uint8)
    image[:, 30:90] = 255  # the central square is white, the sides black
    out = transform_for_model({"image_size": 30, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})(
        image
    )
    assert torch.allclose(out, torch.ones(3, 30, 30))


def test_eval_transform_enlarges_with_the_models_interpolation():
    """preprocess_config["interpolation"] decides how small frames are enlarged (it was stored and ignored)."""
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    config = {"image_size": 30, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    outputs = {}
    for name, flag in (("bilinear", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC)):
        outputs[name] = transform_for_model({**config, "interpolation": name}, normalize=False)(image)
        expected = cv2.resize(image, (30, 30), interpolation=flag)
        assert torch.equal(outputs[name], torch.from_numpy(expected).permute(2, 0, 1)), name
    assert not torch.equal(outputs["bilinear"], outputs["bicubic"])


def test_uint8_transform_normalised_on_the_batch_equals_the_normalised_transform():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(72, 128, 3), (40, 40, 3)]]
    preprocess = {"image_size": 32, "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)}
    normalised = transform_for_model(preprocess)
    raw = transform_for_model(preprocess, normalize=False)
    pixels = torch.stack([raw(image) for image in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == (2, 3, 32, 32)
    batch = normalize_images(pixels, preprocess["mean"], preprocess["std"])
    assert batch.dtype == torch.float32 and batch.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch, torch.stack([normalised(image) for image in images]), rtol=0, atol=1e-5)
    # float batches are already normalised: only the layout changes
    assert torch.equal(normalize_images(batch, preprocess["mean"], preprocess["std"]), batch)


def test_seeded_train_steps_draw_independently():
    transform = create_transform(32, train=True)
    first_draws = []
    for seed in range(300):
        transform.set_random_seed(seed)
        first_draws.append([step.py_random.random() for step in transform.pipeline.transforms])
    draws = np.array(first_draws)  # (seeds, steps): each step's apply/parameter draw
    assert len(set(draws[0])) == draws.shape[1]  # one seed for all steps made these equal
    correlation = np.corrcoef(draws.T)
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.25
    transform.set_random_seed(5)
    image = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    first = transform(image)
    transform.set_random_seed(5)
    assert torch.equal(first, transform(image))  # still reproducible under a seed


def test_train_transform_is_random():
    image = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    transform = create_transform(32, train=True)
    assert not torch.equal(transform(image), transform(image))


# --- dataset and sampler --------------------------------------------------------------------


def small_dataset(tmp_path, skip=False):
    labels = write_labels(tmp_path)
    df = read_metadata(write_csv(tmp_path / "m.csv", GOOD_ROWS), labels)
    root = tmp_path / "training"
    make_images(root, df["path"])
    return df, root, labels


def test_frame_dataset_items_and_loader(tmp_path):
    df, root, labels = small_dataset(tmp_path)
    dataset = FrameDataset(df, root, create_transform(16), class_index=load_labels(labels))
    item = dataset[3]
    assert item["image"].shape == (3, 16, 16) and item["class_index"] == 2 and item["index"] == 3
    batch = next(iter(DataLoader(dataset, batch_size=5, collate_fn=collate_frames)))
    assert batch["image"].shape == (5, 3, 16, 16)
    assert batch["class_index"].tolist() == [0, 0, 1, 2, 2]


def test_bad_image_raises_naming_file_or_is_skipped(tmp_path):
    df, root, _ = small_dataset(tmp_path)
    (root / "2" / "1001.0.jpg").write_bytes(jpeg_bytes()[:500])
    with pytest.raises(ImageError, match=r"1001\.0\.jpg.*metadata row 4"):
        FrameDataset(df, root, create_transform(16))[2]
    dataset = FrameDataset(df, root, create_transform(16), skip_bad_images=True)
    assert dataset[2] is None
    batch = next(iter(DataLoader(dataset, batch_size=5, collate_fn=collate_frames)))
    assert batch["index"].tolist() == [0, 1, 3, 4]
    assert collate_frames([None, None]) is None


def test_dataset_rejects_class_outside_mapping(tmp_path):
    df, root, _ = small_dataset(tmp_path)
    with pytest.raises(DataError, match=r"class id\(s\) \[3\]"):
        FrameDataset(df, root, create_transform(16), class_index=[1, 2])


def test_class_counts_and_balanced_sampler():
    """The trainer's class-balanced sampling: SeededSampler drawing with balanced_sample_weights."""
    from clipmg.training.distributed import DistEnv
    from clipmg.training.sampling import SeededSampler

    df = pd.DataFrame({"class_id": [5] * 90 + [7] * 10})
    assert class_counts(df).to_dict() == {5: 90, 7: 10}
    indices = np.array([0] * 90 + [1] * 10)

    def draw(mode: str) -> np.ndarray:
        weights = torch.as_tensor(balanced_sample_weights(indices, mode), dtype=torch.float32)
        sampler = SeededSampler(len(indices), seed=0, env=DistEnv(), batch_size=10, weights=weights)
        order = []
        for epoch in range(40):
            sampler.set_epoch(epoch)
            order += sampler.epoch_order()
        return indices[order]

    drawn = draw("inverse")
    assert len(drawn) == 4000 and 0.45 < drawn.mean() < 0.55
    assert 0.2 < draw("sqrt").mean() < 0.3  # sqrt(10)/(sqrt(10)+sqrt(90)) = 0.25
    with pytest.raises(DataError, match="unknown sampler mode"):
        balanced_sample_weights(indices, mode="square")


# --- check ----------------------------------------------------------------------------------


def test_check_passes_on_good_data(tmp_path):
    df, root, labels = small_dataset(tmp_path)
    report = check_dataset(tmp_path / "m.csv", labels, image_root=root)
    assert report.ok, report.to_text()
    assert report.rows == 5 and report.clips == 4 and report.classes == 3
    assert report.class_counts == {1: 2, 2: 1, 3: 2}
    assert report.imbalance_ratio == 2.0
    assert report.frames_per_clip == {"min": 1, "median": 1.0, "max": 2}
    assert report.to_dict()["ok"] is True and "result       OK" in report.to_text()


def test_check_reports_missing_unreadable_duplicates_and_bad_rows(tmp_path):
    rows = GOOD_ROWS + [GOOD_ROWS[0], [None] * 5, ["9/1.0.jpg", 9, 1, 0, "Turtle neck"]]
    path = write_xlsx(tmp_path / "train.xlsx", rows)
    labels = write_labels(tmp_path)
    root = tmp_path / "training"
    make_images(root, [r[0] for r in GOOD_ROWS[1:]])
    (root / "2" / "1001.0.jpg").write_bytes(b"garbage")
    report = check_dataset(path, labels)
    assert not report.ok
    assert report.missing_images == ["1/1000.0.jpg"]
    assert [p for p, _ in report.unreadable_images] == ["2/1001.0.jpg"]
    assert report.duplicate_paths == ["1/1000.0.jpg"]
    assert report.bad_row_kinds == {"empty_row": 1, "unknown_class": 1}
    assert any("row 8: empty row" in m for m in report.bad_rows)
    text = report.to_text()
    assert "missing images: 1" in text and "unreadable images: 1" in text and "NOT OK" in text
    assert check_dataset(path, labels, verify_images=False).unreadable_images == []


def test_check_skip_bad_images_turns_image_errors_into_warnings(tmp_path):
    df, root, labels = small_dataset(tmp_path)
    (root / "1" / "1000.0.jpg").unlink()
    report = check_dataset(tmp_path / "m.csv", labels, image_root=root, skip_bad_images=True)
    assert report.ok and any("1 of 5 images missing" in w for w in report.warnings)


def test_check_reports_unusable_metadata_without_raising(tmp_path):
    path = write_csv(tmp_path / "m.csv", [r[:2] for r in GOOD_ROWS], ["Path", "Class"])
    report = check_dataset(path, write_labels(tmp_path))
    assert not report.ok and "missing column(s) 'Video ID', 'Frame ID'" in report.errors[0]
    report = check_dataset(path, tmp_path / "missing_labels.csv")
    assert any("label file not found" in e for e in report.errors)


# --- horizontal flips with per-frame inputs ---------------------------------------------------


@pytest.fixture
def flip_fields():
    """Extra fields: "x_position" (a fraction of the width: mirrors to 1 - x), "weight" (no
    position) and "opaque" (registered without saying how it mirrors)."""
    from clipmg.data import extras

    def loader(paths, roots, options):
        return np.zeros(len(paths), np.float32)

    extras.register_extra_field("x_position", mirror=lambda x: 1 - x)(loader)
    extras.register_extra_field("weight", mirror=extras.position_free)(loader)
    extras.register_extra_field("opaque")(loader)
    yield
    for name in ("x_position", "weight", "opaque"):
        extras.EXTRA_FIELD_LOADERS.pop(name, None)
        extras.EXTRA_FIELD_MIRRORS.pop(name, None)


def noisy_dataset(tmp_path, hflip, transform=None, fields=("x_position", "weight")):
    """The metadata of `small_dataset` over random-noise PNGs (a flip shows), and two fields."""
    labels = write_labels(tmp_path)
    df = read_metadata(write_csv(tmp_path / "m.csv", GOOD_ROWS), labels)
    df["path"] = df["path"].str.replace(".jpg", ".png")
    root = tmp_path / "training"
    rng = np.random.default_rng(0)
    for relative in df["path"]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(root / relative)
    values = {"x_position": np.linspace(0.1, 0.3, len(df), dtype=np.float32),
              "weight": np.arange(1, len(df) + 1, dtype=np.float32),
              "opaque": np.zeros(len(df), np.float32)}
    transform = transform or (lambda image: torch.from_numpy(image.copy()))
    dataset = FrameDataset(df, root, transform, class_index=load_labels(labels),
                           extra_fields={name: values[name] for name in fields}, hflip=hflip)
    originals = [load_image(root / p) for p in df["path"]]
    return dataset, values, originals


def test_hflip_flips_image_and_mirrors_the_extra_fields_together(tmp_path, flip_fields):
    dataset, values, originals = noisy_dataset(tmp_path, hflip=True)
    seen = set()
    for seed in range(12):
        for index in range(len(dataset)):
            dataset.set_random_seed(seed * 100 + index)
            item = dataset[index]
            image = item["image"].numpy()
            flipped = np.array_equal(image, originals[index][:, ::-1])
            assert flipped or np.array_equal(image, originals[index])
            seen.add(flipped)
            x = values["x_position"][index]
            assert item["x_position"].item() == pytest.approx(1 - x if flipped else x)
            assert item["weight"].item() == values["weight"][index]  # position-free: unchanged
    assert seen == {False, True}


def test_hflip_decisions_repeat_under_the_same_seed_epoch_and_index(tmp_path, flip_fields):
    from clipmg.training.sampling import EpochSeededDataset

    transform = create_transform(8, train=True)
    assert not transform.hflip  # the dataset flips, not the transform
    dataset, values, _ = noisy_dataset(tmp_path, hflip=True, transform=transform)
    seeded = EpochSeededDataset(dataset, seed=3)
    decisions = []
    for epoch in range(3):
        for index in range(len(dataset)):
            first, again = seeded[(epoch, index)], seeded[(epoch, index)]
            assert torch.equal(first["image"], again["image"])  # the crop, jitter and the flip
            assert first["x_position"] == again["x_position"]
            decisions.append(first["x_position"].item() != pytest.approx(values["x_position"][index]))
    assert 0 < sum(decisions) < len(decisions)  # some items flipped, some not
    # unseeded, the flip draws from torch's generator
    dataset.set_random_seed(None)
    torch.manual_seed(0)
    unseeded = [dataset[0]["x_position"].item() for _ in range(20)]
    torch.manual_seed(0)
    assert [dataset[0]["x_position"].item() for _ in range(20)] == unseeded and len(set(unseeded)) == 2


def test_without_hflip_items_and_images_are_as_before(tmp_path, flip_fields):
    transform = create_transform(8, train=True)
    dataset, values, originals = noisy_dataset(tmp_path, hflip=False, transform=transform)
    reference = create_transform(8, train=True)
    for index in range(len(dataset)):
        dataset.set_random_seed(7 + index)
        item = dataset[index]
        assert item["x_position"].item() == values["x_position"][index]
        assert item["weight"].item() == values["weight"][index]
        reference.set_random_seed(7 + index)  # what the trainer seeds
        assert torch.equal(item["image"], reference(originals[index]))


def test_hflip_refuses_inputs_it_cannot_mirror(tmp_path, flip_fields):
    with pytest.raises(DataError, match=r"'opaque'.*no mirror function.*mirror=position_free"):
        noisy_dataset(tmp_path, hflip=True, fields=("x_position", "opaque"))
    noisy_dataset(tmp_path, hflip=False, fields=("x_position", "opaque"))  # no flips: nothing to mirror
    # a transform that flips on its own would leave positions unmirrored
    flipping = create_transform(8, train=True, hflip=True)
    assert flipping.hflip and any(type(step).__name__ == "HorizontalFlip" for step in flipping.pipeline.transforms)
    with pytest.raises(DataError, match=r"flips images by itself.*'x_position'.*hflip=True to FrameDataset"):
        noisy_dataset(tmp_path, hflip=False, transform=flipping)
    with pytest.raises(DataError, match="'opaque'"):
        noisy_dataset(tmp_path, hflip=False, transform=flipping, fields=("opaque",))
    noisy_dataset(tmp_path, hflip=False, transform=flipping, fields=("weight",))  # position-free: fine
    noisy_dataset(tmp_path, hflip=False, transform=flipping, fields=())
