"""`predict_csv`, `evaluate_checkpoint`, `clipmg predict/evaluate` and `test.py` on a tiny
checkpoint: one prediction per input row, metrics equal to evaluate's, batch-size and chunk
invariance, and a clear message for every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipmg.checkpoint import save_checkpoint
from clipmg.cli import main
from clipmg.errors import CheckpointError, DataError, ImageError
from clipmg.inference import Classifier, evaluate_checkpoint, predict_csv
from clipmg.prompts import PromptSet

REPO = Path(__file__).resolve().parent.parent
CLASS_IDS = [1, 2, 3]
CLASS_NAMES = ["Folding arms", "Scratching head", "Touching nose"]
# (class id, clip, frame): 9 frames in 4 clips
FRAMES = [(1, "v1", 1), (1, "v1", 2), (2, "v2", 1), (2, "v2", 2), (2, "v2", 3), (3, "v3", 1),
          (3, "v3", 2), (1, "v4", 1), (3, "v4", 2)]
COLUMNS = ["Path", "Class", "Video ID", "Frame ID", "Caption"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from clipmg.models import create_model

    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(folder, model, {"class_ids": CLASS_IDS, "class_names": CLASS_NAMES,
                                    "prompts": PromptSet(templates=["a person {}", "{}"]).to_dict(),
                                    "preprocess": model.preprocess_config})
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """root/frames.csv, images under root/training/<class>/ (paths relative to training/)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = []
    for i, (class_id, clip, frame) in enumerate(FRAMES):
        relative = f"{class_id}/{clip}_{frame}.{'png' if i % 4 == 3 else 'jpg'}"
        path = root / "training" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (48 + 8 * (i % 3), 64, 3), dtype=np.uint8)
        pixels[..., class_id - 1] = 200  # a little class signal, not that the model is trained
        Image.fromarray(pixels).save(path)
        rows.append([relative, class_id, clip, frame, CLASS_NAMES[class_id - 1].lower()])
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / "frames.csv", index=False)
    return root


def write_csv(path: Path, rows: list[list], columns=COLUMNS) -> Path:
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def frames_with(dataset: Path, tmp_path: Path, change) -> Path:
    """A copy of frames.csv (in tmp_path, images still found through --image-root)."""
    frame = pd.read_csv(dataset / "frames.csv", dtype=str, keep_default_na=False)
    change(frame)
    out = tmp_path / "frames.csv"
    frame.to_csv(out, index=False)
    return out


def predict(checkpoint, csv, **kwargs) -> dict:
    kwargs.setdefault("workers", 0)
    return predict_csv(checkpoint, csv, device="cpu", **kwargs)


# ----------------------------------------------------------------------------- outputs
def test_one_prediction_per_row_with_topk_and_metrics(checkpoint, dataset, tmp_path):
    out = tmp_path / "out" / "preds.csv"
    summary = predict(checkpoint, dataset / "frames.csv", output=out, topk=2)
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    source = pd.read_csv(dataset / "frames.csv", dtype=str, keep_default_na=False)
    assert len(table) == len(FRAMES) == summary["n_rows"] == summary["n_predicted"]
    assert list(table.columns) == [*COLUMNS, "pred_class", "pred_name", "score", "top1_class", "top1_name",
                                   "top1_prob", "top2_class", "top2_name", "top2_prob", "status"]
    pd.testing.assert_frame_equal(table[COLUMNS], source)  # input columns kept as written
    assert set(table["status"]) == {"ok"}
    assert set(table["pred_class"].astype(int)) <= set(CLASS_IDS)
    assert (table["pred_class"] == table["top1_class"]).all()
    assert table["pred_name"].isin(CLASS_NAMES).all()
    probs = table[["top1_prob", "top2_prob"]].astype(float).to_numpy()
    assert (probs[:, 0] >= probs[:, 1]).all() and (probs.sum(axis=1) <= 1 + 1e-5).all()
    assert np.allclose(table["score"].astype(float), probs[:, 0])
    metrics = summary["metrics"]
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "n_images", "n_clips"):
        assert key in metrics
    assert metrics["n_images"] == len(FRAMES) and metrics["n_clips"] == 4 and metrics["top5"] == 1.0
    files = summary["metrics_files"]
    assert json.loads(Path(files["metrics"]).read_text())["n_images"] == len(FRAMES)
    assert len(pd.read_csv(files["per_class"])) == 3 and Path(files["confusion_png"]).stat().st_size > 0
    assert summary["images_per_s"] > 0


def test_predictions_are_the_trainers_validation_logits(checkpoint, dataset, tmp_path):
    """scale * normalize(image features) @ class embeddings.T, the class embeddings built once."""
    from clipmg.checkpoint import load_checkpoint
    from clipmg.data import load_image, transform_for_model
    from clipmg.prompts import build_class_embeddings

    summary = predict(checkpoint, dataset / "frames.csv", output=tmp_path / "p.csv", topk=3)
    table = pd.read_csv(summary["output"])
    model, config = load_checkpoint(checkpoint)
    transform = transform_for_model(config["preprocess"])
    images = torch.stack([transform(load_image(dataset / "training" / p, max_size=transform.decode_size))
                          for p in table["Path"]])
    with torch.no_grad():
        embeddings = build_class_embeddings(model, CLASS_NAMES, PromptSet.from_dict(config["prompts"]),
                                            class_ids=CLASS_IDS)
        logits = model.scale().float() * model.encode_image(images).float() @ embeddings.float().T
    probs = torch.softmax(logits, dim=1)
    expected = np.array(CLASS_IDS)[probs.argmax(dim=1).numpy()]
    assert (table["pred_class"].to_numpy() == expected).all()
    got = table[["top1_prob", "top2_prob", "top3_prob"]].to_numpy()
    assert np.allclose(got, probs.sort(dim=1, descending=True).values.numpy(), atol=2e-6)


def test_without_labels_no_metrics(checkpoint, dataset, tmp_path):
    csv = frames_with(dataset, tmp_path, lambda f: f.drop(columns=["Class", "Caption"], inplace=True))
    summary = predict(checkpoint, csv, image_root=dataset / "training")
    assert summary["metrics"] is None and summary["output"] == str(tmp_path / "predictions.csv")
    assert len(pd.read_csv(summary["output"])) == len(FRAMES)


def test_caption_labels_and_unlabelled_rows(checkpoint, dataset, tmp_path):
    def change(frame):
        frame.drop(columns=["Class"], inplace=True)
        frame.loc[0, "Caption"] = ""  # not scored, still predicted
        frame.loc[1, "Caption"] = "waving hands"
    csv = frames_with(dataset, tmp_path, change)
    with pytest.raises(DataError, match=r"row 3, column 'Caption': '.*' is not a class name"):
        predict(checkpoint, csv, image_root=dataset / "training")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame.loc[1, "Caption"] = "  folding   ARMS "  # cleaned and case-folded like class names
    frame.to_csv(csv, index=False)
    summary = predict(checkpoint, csv, image_root=dataset / "training")
    assert summary["n_predicted"] == len(FRAMES)
    assert summary["metrics"]["n_images"] == len(FRAMES) - 1 and summary["n_unlabelled"] == 1


def test_predict_metrics_equal_evaluate(checkpoint, dataset, tmp_path):
    summary = predict(checkpoint, dataset / "frames.csv", output=tmp_path / "p.csv", batch_size=4)
    metrics = evaluate_checkpoint(checkpoint, dataset / "frames.csv", out_dir=tmp_path / "eval", device="cpu",
                                  workers=0, batch_size=3)
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "n_images", "n_clips"):
        assert metrics[key] == pytest.approx(summary["metrics"][key]), key
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "predictions.csv"):
        assert (tmp_path / "eval" / name).is_file()
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "n_images"):
        assert key in saved
    evaluated = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert (evaluated["pred_class"].to_numpy() == pd.read_csv(tmp_path / "p.csv")["pred_class"].to_numpy()).all()


def test_evaluate_split_subset_and_default_folder(checkpoint, dataset, tmp_path):
    frame = pd.read_csv(dataset / "frames.csv")
    frame["split"] = ["train" if clip in ("v1", "v3") else "val" for clip in frame["Video ID"]]
    split_csv = tmp_path / "split.csv"
    frame.to_csv(split_csv, index=False)
    metrics = evaluate_checkpoint(checkpoint, dataset / "frames.csv", split=split_csv, subset="val",
                                  device="cpu", workers=0)
    assert metrics["n_images"] == 5 and metrics["n_clips"] == 2 and metrics["subset"] == "val"
    assert Path(metrics["out_dir"]) == checkpoint.parent / "eval" / "best"
    assert (checkpoint.parent / "eval" / "best" / "metrics.json").is_file()
    with pytest.raises(DataError, match="no 'val' frames"):
        frame["split"] = "train"
        frame.to_csv(split_csv, index=False)
        evaluate_checkpoint(checkpoint, dataset / "frames.csv", split=split_csv, device="cpu", workers=0,
                            out_dir=tmp_path / "e")


def test_batch_size_invariance(checkpoint, dataset, tmp_path):
    tables = []
    for batch_size in (1, 4, 64):
        out = tmp_path / f"b{batch_size}.csv"
        predict(checkpoint, dataset / "frames.csv", output=out, batch_size=batch_size, topk=3)
        tables.append(pd.read_csv(out))
    for table in tables[1:]:
        assert (table["pred_class"] == tables[0]["pred_class"]).all()
        for column in ("score", "top2_prob", "top3_prob"):
            assert np.allclose(table[column], tables[0][column], atol=2e-6)


def test_streaming_in_chunks_gives_the_same_output(checkpoint, dataset, tmp_path):
    """Chunks of 8 rows, decoded by 2 workers, write the same file as one chunk in-process."""
    frame = pd.read_csv(dataset / "frames.csv", dtype=str)
    many = pd.concat([frame] * 3, ignore_index=True)  # 27 rows
    csv = tmp_path / "many.csv"
    many.to_csv(csv, index=False)
    one = predict(checkpoint, csv, output=tmp_path / "one.csv", image_root=dataset / "training", batch_size=4)
    chunked = predict(checkpoint, csv, output=tmp_path / "chunked.csv", image_root=dataset / "training",
                      batch_size=4, chunk_rows=8, workers=2)
    one_table, chunked_table = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "chunked.csv")
    assert len(chunked_table) == chunked["n_rows"] == len(many)
    pd.testing.assert_frame_equal(one_table, chunked_table, check_exact=False, atol=2e-6)
    assert one["metrics"] == pytest.approx(chunked["metrics"])
    assert chunked["metrics"]["n_clips"] == 4  # clips spread over chunks are still one clip each


def test_labels_file_renames_classes(checkpoint, dataset, tmp_path):
    labels = tmp_path / "Clip_label.csv"
    labels.write_text("id,name\n1,arms folded\n2,head scratched\n3,nose touched\n")
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", labels=labels)
    assert classifier.class_names == ["Arms folded", "Head scratched", "Nose touched"]
    csv = frames_with(dataset, tmp_path, lambda f: f.drop(columns=["Caption"], inplace=True))
    summary = predict(checkpoint, csv, image_root=dataset / "training", labels=labels)
    assert set(pd.read_csv(summary["output"])["pred_name"]) <= set(classifier.class_names)
    labels.write_text("id,name\n1,a\n2,b\n4,d\n")
    with pytest.raises(DataError, match=r"class ids 1, 2, 3.*also has \[4\]; lacks \[3\]"):
        Classifier.from_checkpoint(checkpoint, device="cpu", labels=labels)


# ---------------------------------------------------------------------------- bad input
def test_missing_column_lists_the_columns(checkpoint, dataset):
    with pytest.raises(DataError, match=r"column 'Image' is not in .*frames.csv; its columns are 'Path', "
                                        r"'Class', 'Video ID', 'Frame ID', 'Caption'"):
        predict(checkpoint, dataset / "frames.csv", columns="Image")


def test_column_name_matches_ignoring_case(checkpoint, dataset, tmp_path):
    summary = predict(checkpoint, dataset / "frames.csv", columns="path", output=tmp_path / "p.csv")
    assert summary["n_predicted"] == len(FRAMES)


def test_empty_csv(checkpoint, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv is empty"):
        predict(checkpoint, empty)
    empty.write_text("Path,Class\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        predict(checkpoint, empty)
    with pytest.raises(DataError, match="image list not found"):
        predict(checkpoint, tmp_path / "nope.csv")


def test_missing_image_names_file_and_row(checkpoint, dataset, tmp_path):
    csv = frames_with(dataset, tmp_path, lambda f: f.__setitem__("Path", f["Path"].where(f.index != 4, "2/gone.jpg")))
    output = tmp_path / "predictions.csv"
    with pytest.raises(ImageError, match=r"image not found: 2/gone.jpg \(.*frames.csv row 6, column 'Path'\)"
                                         r".*--skip-missing"):
        predict(checkpoint, csv, image_root=dataset / "training")
    assert not output.exists() and not list(tmp_path.glob(".predictions.csv*"))  # no half-written file
    summary = predict(checkpoint, csv, image_root=dataset / "training", skip_missing=True)
    table = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert len(table) == len(FRAMES) and summary["n_skipped"] == 1 and summary["n_predicted"] == len(FRAMES) - 1
    assert table["status"].tolist() == ["ok"] * 4 + ["missing"] + ["ok"] * 4
    assert table.loc[4, ["pred_class", "pred_name", "score", "top1_prob"]].tolist() == ["", "", "", ""]
    assert summary["skipped"] == [{"row": 6, "path": "2/gone.jpg", "status": "missing",
                                   "reason": summary["skipped"][0]["reason"]}]
    assert summary["metrics"]["n_images"] == len(FRAMES) - 1


def test_corrupt_image(checkpoint, dataset, tmp_path):
    bad = tmp_path / "images" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = next((dataset / "training" / "1").glob("*.jpg"))
    csv = write_csv(tmp_path / "list.csv", [[str(good)], ["images/bad.jpg"]], columns=["Path"])
    with pytest.raises(ImageError, match=r"bad.jpg.*list.csv row 3, column 'Path'"):
        predict(checkpoint, csv)
    summary = predict(checkpoint, csv, skip_missing=True)
    assert pd.read_csv(summary["output"])["status"].tolist() == ["ok", "unreadable"]


def test_missing_and_incomplete_checkpoint(dataset, tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist\. Train one with `clipmg train"):
        predict(tmp_path / "checkpoints" / "best", dataset / "frames.csv")
    incomplete = tmp_path / "half"
    incomplete.mkdir()
    (incomplete / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"incomplete: it needs config.json"):
        predict(incomplete, dataset / "frames.csv")


def test_unknown_label(checkpoint, dataset, tmp_path):
    csv = frames_with(dataset, tmp_path, lambda f: f.__setitem__("Class", f["Class"].where(f.index != 2, "33")))
    with pytest.raises(DataError, match=r"row 4, column 'Class': '33' is not one of the checkpoint's class ids"):
        predict(checkpoint, csv, image_root=dataset / "training")
    assert not (tmp_path / "predictions.csv").exists()  # checked before any image is decoded


def test_output_must_not_be_the_input(checkpoint, dataset):
    with pytest.raises(DataError, match="is the input CSV itself"):
        predict(checkpoint, dataset / "frames.csv", output=dataset / "frames.csv")


def test_cli_turns_errors_into_messages(checkpoint, dataset, capsys):
    code = main(["-q", "predict", "--imagepathscsv", str(dataset / "frames.csv"), "--columnname", "Image",
                 "--checkpoint", str(checkpoint), "--workers", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: column 'Image' is not in") and "Traceback" not in err


def test_cli_evaluate(checkpoint, dataset, tmp_path, capsys):
    code = main(["-q", "evaluate", "--checkpoint", str(checkpoint), "--metadata", str(dataset / "frames.csv"),
                 "--out", str(tmp_path / "ev"), "--workers", "0", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "frames:" in out and "clips:" in out and "per-class recall" in out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_images"] == len(FRAMES)


def test_test_py_end_to_end(checkpoint, dataset, tmp_path):
    """As a user runs it: `python test.py --imagepathscsv x.csv --columnname Path`."""
    result = subprocess.run(
        [sys.executable, str(REPO / "test.py"), "--imagepathscsv", str(dataset / "frames.csv"),
         "--columnname", "Path", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "p.csv"), "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "images/s" in result.stdout and "frames:" in result.stdout and "clips:" in result.stdout
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(FRAMES)
    expected = predict(checkpoint, dataset / "frames.csv", output=tmp_path / "q.csv")["metrics"]["top1"]
    assert f"top1 {expected:.4f}" in result.stdout


def test_rows_without_clip_are_clips_of_their_own(checkpoint, dataset, tmp_path):
    def change(frame):
        frame.loc[[0, 7], "Video ID"] = ""  # v1 keeps frame 2; v4 keeps frame 2
    csv = frames_with(dataset, tmp_path, change)
    summary = predict(checkpoint, csv, image_root=dataset / "training", chunk_rows=4)
    assert summary["metrics"]["n_clips"] == 4 + 2


def test_previous_prediction_columns_are_replaced(checkpoint, dataset, tmp_path):
    first = predict(checkpoint, dataset / "frames.csv", output=tmp_path / "first.csv", topk=2)
    again = predict(checkpoint, first["output"], output=tmp_path / "again.csv", image_root=dataset / "training",
                    topk=2)
    assert list(pd.read_csv(again["output"]).columns) == list(pd.read_csv(first["output"]).columns)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(checkpoint, dataset):
    from clipmg.errors import ModelError

    with pytest.raises(ModelError, match="no CUDA GPU"):
        predict_csv(checkpoint, dataset / "frames.csv", device="cuda")


def test_prompt_override_and_descriptions_by_class_id(checkpoint, tmp_path):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("templates: ['a video frame of a person {}']\ndescriptions:\n  '2': rubbing the top of the head\n")
    plain = Classifier.from_checkpoint(checkpoint, device="cpu")
    described = Classifier.from_checkpoint(checkpoint, device="cpu", prompts=prompts)
    changed = ~torch.isclose(plain.class_embeddings, described.class_embeddings).all(dim=1)
    assert changed.all()  # another template for every class
    again = Classifier.from_model(described.model, CLASS_IDS, CLASS_NAMES,
                                  PromptSet(templates=["a video frame of a person {}"]))
    # texts are encoded without padding past the batch's longest, so equal means equal to rounding
    differs = ~torch.isclose(again.class_embeddings, described.class_embeddings, atol=1e-5).all(dim=1)
    assert differs.tolist() == [False, True, False]  # only class id 2 has a description
