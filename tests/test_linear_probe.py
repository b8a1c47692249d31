"""Linear probe: the L-BFGS head matches sklearn's logistic regression, features are cached once,
and the probe checkpoint evaluates (evaluate / test.py) to the figures the probe reported."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from clipmg.checkpoint import load_checkpoint
from clipmg.cli.probe import add_probe_arguments
from clipmg.cli.probe import run as probe_from_args
from clipmg.errors import DataError, ModelError
from clipmg.inference import evaluate_checkpoint
from clipmg.jobs.linear_probe import fit_linear_head, probe_checkpoint
from clipmg.models import SupervisedModel
from clipmg.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n=120, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    y = rng.integers(classes, size=n)
    x = centers[y] + rng.normal(scale=1.0, size=(n, d))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@pytest.mark.parametrize("weighted", [False, True])
def test_head_matches_sklearn_logistic_regression(weighted):
    x, y = blobs()
    l2 = 1e-2
    class_weights = torch.tensor([0.5, 1.0, 2.0]) if weighted else None
    weight, bias = fit_linear_head(x, y, 3, l2=l2, class_weights=class_weights)
    # sklearn minimises 0.5||W||^2 + C * sum_i w_i CE_i; ours sum_i w_i CE_i / sum_i w_i + l2 ||W||^2
    total = float(class_weights[y].sum()) if weighted else len(y)
    reference = LogisticRegression(C=1.0 / (2 * l2 * total), max_iter=5000, tol=1e-10,
                                   class_weight={i: float(w) for i, w in enumerate(class_weights)}
                                   if weighted else None).fit(x.numpy(), y.numpy())
    ours = torch.softmax(x @ weight.T + bias, dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(x.numpy()), atol=2e-3)


def test_head_learns_classes_absent_from_nothing_and_rejects_bad_input():
    x, y = blobs(classes=2)
    weight, bias = fit_linear_head(x, y, 4, l2=1e-3)  # classes 2 and 3 have no frames
    assert weight.shape == (4, 6)
    preds = (x @ weight.T + bias).argmax(1)
    assert set(preds.tolist()) <= {0, 1}
    with pytest.raises(DataError, match="l2"):
        fit_linear_head(x, y, 2, l2=-1)
    with pytest.raises(DataError, match="no training frames"):
        fit_linear_head(x[:0], y[:0], 2)


@pytest.fixture(scope="module")
def contrastive_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_source")
    train(TrainConfig(metadata=str(tiny_dataset / "training" / "train.xlsx"),
                      labels=str(tiny_dataset / "Clip_label.csv"), model="openclip:clipmg-tiny", epochs=1,
                      batch_size=8, workers=0, warmup=1, max_steps_per_epoch=2, output=str(out / "run"),
                      tensorboard=False, seed=1).validate())
    return out / "run"


def test_probe_checkpoint_evaluates_to_the_reported_metrics_and_caches_features(contrastive_run, tmp_path):
    split = contrastive_run / "split.csv"
    summary = probe_checkpoint(contrastive_run / "best", split, tmp_path / "probe", workers=0,
                               class_weighting="sqrt")
    assert not summary["cached"] and (tmp_path / "probe" / "features.safetensors").is_file()
    model, config = load_checkpoint(summary["checkpoint"])
    assert isinstance(model, SupervisedModel) and config["model"]["backbone"] == "clip"
    card = (Path(summary["checkpoint"]) / "README.md").read_text()  # the probe's model card
    assert "Probe" in card and "pipeline_tag: image-classification" in card and str(split) in card
    evaluated = evaluate_checkpoint(summary["checkpoint"], split, split=split, subset="val", workers=0,
                                    out_dir=tmp_path / "eval")
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "n_images"):
        assert evaluated[key] == pytest.approx(summary["metrics"][key], abs=1e-6), key
    # the tower is the source's, unchanged
    source, _ = load_checkpoint(contrastive_run / "best")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()["backbone." + key], value)

    again = probe_checkpoint(contrastive_run / "best", split, tmp_path / "probe", workers=0, class_weighting="sqrt")
    assert again["cached"] and again["metrics"] == summary["metrics"]


def test_probe_refuses_a_head_checkpoint_and_a_missing_split(contrastive_run, tmp_path):
    summary = probe_checkpoint(contrastive_run / "best", contrastive_run / "split.csv", tmp_path / "p", workers=0)
    with pytest.raises(ModelError, match="already has a linear class head"):
        probe_checkpoint(summary["checkpoint"], contrastive_run / "split.csv", tmp_path / "q", workers=0)
    with pytest.raises(DataError, match="split file not found"):
        probe_checkpoint(contrastive_run / "best", tmp_path / "nope.csv", tmp_path / "q", workers=0)


def test_probe_command_function(contrastive_run, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_probe_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(contrastive_run / "best"), "--split",
                              str(contrastive_run / "split.csv"), "--out", str(tmp_path / "cli"), "--workers", "0",
                              "--l2", "1e-3"])
    assert probe_from_args(args) == 0
    out = capsys.readouterr().out
    assert "linear probe" in out and "top-1" in out and str(tmp_path / "cli" / "checkpoint") in out
