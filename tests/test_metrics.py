"""Metrics against values computed by hand: top-k, balanced accuracy, macro-F1, per-class
recall/precision, clip-level averaging of logits, and the report files."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from clipmg.metrics import (
    clip_level_logits,
    clip_majority_votes,
    compute_metrics,
    confusion,
    metrics_summary_lines,
    per_class_lines,
    per_class_report,
    topk_accuracy,
    write_report,
)

# 7 frames, 3 classes. Predictions (argmax): 0, 1, 1, 0, 2, 1, 0.
LOGITS = torch.tensor([
    [4.0, 1.0, 0.0],   # true 0, pred 0        clip A
    [0.0, 2.0, 1.0],   # true 0, pred 1 (top2: 1, 2 -> miss)   clip A
    [0.0, 5.0, 1.0],   # true 1, pred 1        clip B
    [2.0, 1.0, 0.0],   # true 1, pred 0 (top2: 0, 1 -> hit)    clip B
    [1.0, 0.0, 3.0],   # true 2, pred 2        clip C
    [0.0, 1.0, 0.5],   # true 2, pred 1 (top2: 1, 2 -> hit)    clip C
    [5.0, 0.0, 0.0],   # true 0, pred 0        clip D
])
TARGETS = torch.tensor([0, 0, 1, 1, 2, 2, 0])
CLIPS = ["A", "A", "B", "B", "C", "C", "D"]


def test_topk_by_hand():
    assert topk_accuracy(LOGITS, TARGETS, 1) == pytest.approx(4 / 7)
    assert topk_accuracy(LOGITS, TARGETS, 2) == pytest.approx(6 / 7)
    assert topk_accuracy(LOGITS, TARGETS, 5) == pytest.approx(1.0)  # k capped at the 3 classes


def test_frame_metrics_by_hand():
    metrics = compute_metrics(LOGITS, TARGETS)
    assert metrics["n_images"] == 7
    assert metrics["top1"] == pytest.approx(4 / 7)
    assert metrics["top5"] == pytest.approx(1.0)
    # recalls 2/3, 1/2, 1/2
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    # F1 = 2 TP / (support + predicted): 4/6, 2/5, 2/3
    assert metrics["macro_f1"] == pytest.approx((4 / 6 + 2 / 5 + 2 / 3) / 3)
    assert "clip_top1" not in metrics


def test_clip_level_averages_logits():
    metrics = compute_metrics(LOGITS, TARGETS, clip_ids=CLIPS)
    # A: mean [2, 1.5, .5] -> 0 (right); B: [1, 3, .5] -> 1; C: [.5, .5, 1.75] -> 2; D -> 0
    assert metrics["n_clips"] == 4
    assert metrics["clip_top1"] == pytest.approx(1.0)
    assert metrics["top1"] == pytest.approx(4 / 7)  # frame-level figures unchanged beside it


def test_clip_level_is_not_a_majority_vote_and_ignores_row_order():
    # One clip of class 2: two frames narrowly vote 0, one is sure of 2. Mean: [2/3, 0, 2.27] -> 2.
    logits = torch.tensor([[1.0, 0.0, 0.9], [0.0, 4.0, 0.0], [1.0, 0.0, 0.9], [0.0, 0.0, 5.0]])
    targets = torch.tensor([2, 1, 2, 2])
    clips = ["e", "f", "e", "e"]  # frames of a clip need not be adjacent
    clip_logits, clip_targets = clip_level_logits(logits, targets, clips)
    assert torch.allclose(clip_logits[0], torch.tensor([2 / 3, 0.0, 6.8 / 3]))
    assert clip_targets.tolist() == [2, 1]
    metrics = compute_metrics(logits, targets, clip_ids=clips)
    assert metrics["top1"] == pytest.approx(2 / 4)
    assert metrics["clip_top1"] == pytest.approx(1.0)
    assert metrics["clip_majority_top1"] == pytest.approx(1 / 2)  # the majority vote says 0 for clip e
    order = torch.tensor([3, 1, 0, 2])
    shuffled = compute_metrics(logits[order], targets[order], clip_ids=[clips[i] for i in order])
    assert shuffled == metrics


def test_majority_vote_ties_go_to_the_highest_mean_probability():
    votes, clip_targets = clip_majority_votes(LOGITS, TARGETS, CLIPS)
    # A votes 0 and 1 (mean probabilities .51, .36, .13), B 1 and 0 (.34, .61, .05), C 2 and 1, D 0
    assert votes.argmax(dim=1).tolist() == [0, 1, 2, 0] and clip_targets.tolist() == [0, 1, 2, 0]
    assert votes.floor().tolist() == [[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 0, 0]]
    metrics = compute_metrics(LOGITS, TARGETS, clip_ids=CLIPS)
    assert metrics["clip_majority_top1"] == metrics["clip_majority_balanced_accuracy"] == pytest.approx(1.0)


def test_a_clip_models_figures_are_reported_beside_the_frame_aggregations(tmp_path):
    paths = {"metrics": tmp_path / "metrics.json", "per_class": tmp_path / "per_class.csv",
             "confusion": tmp_path / "confusion.csv", "confusion_png": tmp_path / "confusion.png"}
    clip_logits, clip_targets = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 1])
    metrics = write_report(LOGITS, TARGETS, ["a", "b", "c"], paths, clip_ids=CLIPS,
                           clip_model=(clip_logits, clip_targets))
    assert metrics["clip_model_n_clips"] == 2 and metrics["clip_model_top1"] == pytest.approx(1 / 2)
    assert metrics["clip_model_top5"] == pytest.approx(1.0)
    assert metrics["clip_top1"] == pytest.approx(1.0)  # the frames' own aggregation, unchanged
    assert json.loads(paths["metrics"].read_text())["clip_model_macro_f1"] == pytest.approx(1 / 2)  # classes 0, 1
    assert any("the clip model" in line for line in metrics_summary_lines(metrics))


def test_balanced_accuracy_ignores_classes_absent_from_targets():
    logits = torch.eye(3)[[0, 2, 1]] * 5  # predictions 0, 2, 1
    metrics = compute_metrics(logits, torch.tensor([0, 0, 1]))
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)  # over the classes present


def test_per_class_report_by_hand():
    report = per_class_report(LOGITS, TARGETS, ["a", "b", "c"], class_ids=[10, 20, 30])
    assert report["class_id"].tolist() == [10, 20, 30]
    assert report["support"].tolist() == [3, 2, 2]
    assert report["predicted"].tolist() == [3, 3, 1]
    assert np.allclose(report["recall"], [2 / 3, 1 / 2, 1 / 2])
    assert np.allclose(report["precision"], [2 / 3, 1 / 3, 1.0])
    assert np.allclose(report["f1"], [2 / 3, 2 / 5, 2 / 3])
    absent = per_class_report(LOGITS, TARGETS, ["a", "b", "c"])
    assert "class_id" not in absent


def test_per_class_report_class_without_frames_has_no_recall():
    logits = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    report = per_class_report(logits, torch.tensor([0, 0]), ["a", "b", "c", "d"])
    assert report["support"].tolist() == [2, 0, 0, 0]
    assert report["recall"].iloc[0] == 0.5 and report["recall"].iloc[1:].isna().all()
    assert math.isnan(report["precision"].iloc[2])  # never predicted
    lines = per_class_lines(report)
    assert len(lines) == 5 and lines[2].split()[-3:] == ["0", "-", "1"]


def test_confusion_by_hand():
    assert confusion(LOGITS, TARGETS, 3).tolist() == [[2, 1, 0], [1, 1, 0], [0, 1, 1]]


def test_write_report_files(tmp_path):
    paths = {"metrics": tmp_path / "m" / "metrics.json", "per_class": tmp_path / "per_class.csv",
             "confusion": tmp_path / "confusion.csv", "confusion_png": tmp_path / "confusion.png"}
    metrics = write_report(LOGITS, TARGETS, ["a", "b", "c"], paths, class_ids=[1, 2, 3], clip_ids=CLIPS,
                           extra={"source": "x.csv"})
    assert metrics["top1"] == pytest.approx(4 / 7) and metrics["source"] == "x.csv"
    saved = json.loads(paths["metrics"].read_text())
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "n_images", "per_class"):
        assert key in saved
    assert saved["per_class"][0]["support"] == 3
    cm = pd.read_csv(paths["confusion"], index_col=0)
    assert cm.to_numpy().tolist() == [[2, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert list(cm.columns) == ["1: a", "2: b", "3: c"]
    assert pd.read_csv(paths["per_class"])["recall"].round(4).tolist() == [0.6667, 0.5, 0.5]
    assert paths["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_lines():
    lines = metrics_summary_lines(compute_metrics(LOGITS, TARGETS, clip_ids=CLIPS))
    assert lines[0].startswith("frames:") and "top1 0.5714" in lines[0]
    assert lines[1].startswith("clips:") and "top1 1.0000" in lines[1]


@pytest.mark.parametrize("seed,frames,classes", [(0, 50, 5), (1, 200, 32), (2, 7, 12), (3, 1, 3)])
def test_balanced_accuracy_and_macro_f1_are_sklearns(seed, frames, classes):
    """Computed from one confusion matrix, they agree with sklearn's definitions, including classes
    that never occur in the targets or the predictions."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, classes, generator=generator)
    targets = torch.randint(0, max(1, classes // 2), (frames,), generator=generator)  # upper classes absent
    y, preds = targets.numpy(), logits.argmax(dim=1).numpy()
    metrics = compute_metrics(logits, targets)
    with warnings.catch_warnings():  # sklearn warns of predicted classes absent from the targets
        warnings.simplefilter("ignore")
        expected_balanced = balanced_accuracy_score(y, preds)
    assert metrics["balanced_accuracy"] == pytest.approx(expected_balanced)
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, preds, labels=np.unique(y), average="macro",
                                                         zero_division=0))


def test_metrics_of_no_frames_are_nan():
    metrics = compute_metrics(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert math.isnan(metrics["balanced_accuracy"]) and math.isnan(metrics["macro_f1"])
