"""test.py (`predict_csv`) and `evaluate` on clips: clip_predictions.csv has one row per clip, a
clip model's row is its temporal head over the K frames it names, or under the mean head over
every frame of the clip (whatever the chunks and the row order of the CSV), a frame model's is
the mean of its frames' logits, and the metrics carry the clip model's figures beside the frame
aggregations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipmg.checkpoint import save_checkpoint
from clipmg.cli import main
from clipmg.data import load_image
from clipmg.inference import Classifier, evaluate_checkpoint, predict_csv
from clipmg.metrics import clip_level_logits
from clipmg.models import compose_model, create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASS_IDS, CLASS_NAMES = [1, 2, 3], ["Folding arms", "Scratching head", "Touching nose"]
# (class id, clip, frame id): clips of 1, 2, 3 and 5 frames, rows not in frame order
FRAMES = [(1, "v1", 7), (2, "v2", 2), (2, "v2", 1), (3, "v3", 5), (3, "v3", 1), (3, "v3", 3),
          (1, "v4", 4), (1, "v4", 0), (1, "v4", 2), (1, "v4", 1), (1, "v4", 3)]
K = 3


def _save(model, folder: Path) -> Path:
    save_checkpoint(folder, model, {"class_ids": CLASS_IDS, "class_names": CLASS_NAMES,
                                    "preprocess": model.preprocess_config})
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    tower = create_model("openclip:clipmg-tiny")
    root = tmp_path_factory.mktemp("ckpt")
    frame = _save(tower, root / "frame")
    clip = compose_model(tower, clip_frames=K, temporal="transformer")
    with torch.no_grad():  # a head that has moved from its start (mean pooling)
        for param in clip.head.parameters():
            param.add_(0.3 * torch.randn(param.shape))
    mean = compose_model(tower, clip_frames=K, temporal="mean")
    return {"frame": frame, "clip": _save(clip, root / "clip"), "mean": _save(mean, root / "mean")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = []
    for class_id, clip, frame in FRAMES:
        relative = f"{class_id}/{clip}_{frame}.jpg"
        (root / "training" / str(class_id)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "training" / relative)
        rows.append([relative, class_id, clip, frame])
    pd.DataFrame(rows, columns=["Path", "Class", "Video ID", "Frame ID"]).to_csv(root / "frames.csv", index=False)
    return root


def _predict(checkpoint, csv: Path, out: Path, **kwargs) -> tuple[dict, pd.DataFrame]:
    summary = predict_csv(checkpoint, csv, output=out, device="cpu", workers=0, **kwargs)
    return summary, pd.read_csv(summary["clip_predictions"], keep_default_na=False)


def test_a_clip_model_writes_one_row_per_clip_from_its_k_frames(checkpoints, dataset, tmp_path):
    summary, clips = _predict(checkpoints["clip"], dataset / "frames.csv", tmp_path / "predictions.csv", topk=2)
    assert summary["clip_predictions"] == str(tmp_path / "clip_predictions.csv") and summary["n_clips"] == 4
    assert list(clips.columns) == ["Video ID", "true_class", "true_name", "pred_class", "pred_name", "score",
                                   "top1_class", "top1_name", "top1_prob", "top2_class", "top2_name", "top2_prob",
                                   "frames", "frames_used", "sampled_frames", "status"]
    assert clips["Video ID"].tolist() == ["v1", "v2", "v3", "v4"] and clips["frames"].tolist() == [1, 2, 3, 5]
    # centres of K=3 segments in Frame ID order; short clips repeat frames
    assert clips["sampled_frames"].tolist() == ["7 7 7", "1 2 2", "1 3 5", "0 2 4"]
    assert clips["frames_used"].tolist() == [1, 2, 3, 3] and set(clips["status"]) == {"ok"}
    assert clips["true_class"].tolist() == [1, 2, 3, 1]

    classifier = Classifier.from_checkpoint(checkpoints["clip"], device="cpu")
    transform = classifier.transform()
    frames = pd.read_csv(dataset / "frames.csv")
    for row in clips.itertuples(index=False):
        mine = frames[frames["Video ID"] == row[0]].set_index("Frame ID")
        images = [transform(load_image(dataset / "training" / mine.loc[int(f), "Path"]))
                  for f in row.sampled_frames.split()]
        probs = classifier.logits(torch.stack(images)[None]).softmax(dim=1)[0]
        assert row.pred_class == CLASS_IDS[int(probs.argmax())]
        assert row.score == pytest.approx(float(probs.max()), abs=1e-5)
    metrics = summary["metrics"]
    assert metrics["clip_model_n_clips"] == 4
    assert metrics["clip_model_top1"] == pytest.approx(float((clips["pred_class"] == clips["true_class"]).mean()))
    for key in ("clip_top1", "clip_majority_top1", "clip_model_balanced_accuracy", "clip_model_macro_f1"):
        assert key in metrics


def test_a_mean_head_clip_model_reads_every_frame_of_a_clip(checkpoints, dataset, tmp_path):
    summary, clips = _predict(checkpoints["mean"], dataset / "frames.csv", tmp_path / "p.csv", chunk_rows=4)
    assert "sampled_frames" not in clips and clips["frames_used"].tolist() == [1, 2, 3, 5]
    classifier = Classifier.from_checkpoint(checkpoints["mean"], device="cpu")
    assert classifier.reads_whole_clip
    transform, frames = classifier.transform(), pd.read_csv(dataset / "frames.csv")
    for row in clips.itertuples(index=False):
        images = [transform(load_image(dataset / "training" / p)) for p in frames.loc[frames["Video ID"] == row[0], "Path"]]
        probs = classifier.logits(torch.stack(images)[None]).softmax(dim=1)[0]  # the head over all of them
        assert row.pred_class == CLASS_IDS[int(probs.argmax())]
        assert row.score == pytest.approx(float(probs.max()), abs=1e-5)
    assert summary["metrics"]["clip_model_n_clips"] == 4
    assert summary["metrics"]["clip_model_top1"] == pytest.approx(
        float((clips["pred_class"] == clips["true_class"]).mean()))


@pytest.mark.parametrize("name", ["clip", "mean"])
def test_chunks_and_row_order_do_not_change_the_clip_predictions(checkpoints, dataset, tmp_path, name):
    _, whole = _predict(checkpoints[name], dataset / "frames.csv", tmp_path / "a" / "p.csv")
    shuffled = pd.read_csv(dataset / "frames.csv").sample(frac=1.0, random_state=3)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    _, chunked = _predict(checkpoints[name], tmp_path / "shuffled.csv", tmp_path / "b" / "p.csv",
                          image_root=dataset / "training", chunk_rows=2)
    chunked = chunked.set_index("Video ID").loc[whole["Video ID"]].reset_index()
    pd.testing.assert_frame_equal(chunked, whole, check_exact=False, atol=1e-5)


def test_a_frame_model_averages_its_frames_logits_per_clip(checkpoints, dataset, tmp_path):
    summary, clips = _predict(checkpoints["frame"], dataset / "frames.csv", tmp_path / "p.csv", chunk_rows=4)
    assert "sampled_frames" not in clips and clips["frames_used"].tolist() == [1, 2, 3, 5]
    classifier = Classifier.from_checkpoint(checkpoints["frame"], device="cpu")
    frames = pd.read_csv(dataset / "frames.csv")
    images = torch.stack([classifier.transform()(load_image(dataset / "training" / p)) for p in frames["Path"]])
    logits, _ = clip_level_logits(classifier.logits(images), torch.zeros(len(frames)), frames["Video ID"])
    assert clips["pred_class"].tolist() == [CLASS_IDS[i] for i in logits.argmax(dim=1).tolist()]
    assert summary["metrics"]["clip_top1"] == pytest.approx(float((clips["pred_class"] == clips["true_class"]).mean()))
    assert "clip_model_top1" not in summary["metrics"]


def test_unreadable_frames_leave_the_clip_its_other_frames(checkpoints, dataset, tmp_path):
    frames = pd.read_csv(dataset / "frames.csv")
    frames.loc[frames["Video ID"] == "v1", "Path"] = "1/gone.jpg"
    frames.loc[(frames["Video ID"] == "v3") & (frames["Frame ID"] == 3), "Path"] = "3/gone.jpg"
    frames.to_csv(tmp_path / "frames.csv", index=False)
    summary, clips = _predict(checkpoints["clip"], tmp_path / "frames.csv", tmp_path / "p.csv",
                              image_root=dataset / "training", skip_missing=True)
    assert clips["status"].tolist() == ["unreadable", "ok", "ok", "ok"]
    assert clips["frames_used"].tolist() == [0, 2, 2, 3] and clips.loc[0, "pred_class"] == ""
    assert summary["metrics"]["clip_model_n_clips"] == 3
    _, clips = _predict(checkpoints["mean"], tmp_path / "frames.csv", tmp_path / "mean.csv",
                        image_root=dataset / "training", skip_missing=True)
    assert clips["status"].tolist() == ["unreadable", "ok", "ok", "ok"]
    assert clips["frames_used"].tolist() == [0, 2, 2, 5]


def test_test_py_and_evaluate_write_clip_predictions_without_flags(checkpoints, dataset, tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(checkpoints["clip"]), "--imagepathscsv",
                 str(dataset / "frames.csv"), "--output", str(tmp_path / "preds.csv"), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "clip_preds.csv: 4 clips" in printed and "the clip model" in printed
    assert len(pd.read_csv(tmp_path / "clip_preds.csv")) == 4

    split = pd.read_csv(dataset / "frames.csv")
    split["split"] = "val"
    split.to_csv(tmp_path / "split.csv", index=False)
    metrics = evaluate_checkpoint(checkpoints["clip"], tmp_path / "split.csv", split=tmp_path / "split.csv",
                                  out_dir=tmp_path / "eval", image_root=dataset / "training", workers=0)
    evaluated = pd.read_csv(tmp_path / "eval" / "clip_predictions.csv")
    predicted = pd.read_csv(tmp_path / "clip_preds.csv")
    assert evaluated["pred_class"].tolist() == predicted["pred_class"].tolist()
    assert metrics["clip_model_top1"] == pytest.approx(
        float((predicted["pred_class"] == predicted["true_class"]).mean()))
