"""Test-time adaptation of batch-norm statistics (`clipmg.inference.adapt`): it undoes a shift of
the frames' statistics, touches nothing but those statistics, keeps the training ones for too few
frames, and is what test.py does by default (`--no-adapt-bn` turns it off)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from clipmg.checkpoint import save_checkpoint
from clipmg.cli import main
from clipmg.inference import Classifier, predict_csv
from clipmg.inference.adapt import MIN_FRAMES, adapt_batch_norm, batch_norm_layers, sample_indices
from clipmg.models import create_model
from clipmg.prompts import PromptSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def shifted_session_model() -> nn.Module:
    """Conv, batch norm, pooling, a linear layer: a frame's class is the sign of its normalised
    channels, so a session whose pixels are brighter and of higher contrast reads as one class."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    source = torch.randn(256, 3, 8, 8)
    model.train()
    with torch.no_grad():
        model[1].momentum = None
        model(source)
        model[1].momentum = 0.1
    return model.eval()


def batches_of(frames: torch.Tensor, size: int = 32):
    return list(frames.split(size))


def test_adaptation_undoes_a_shift_of_the_frames_statistics():
    model = shifted_session_model()
    frames = torch.randn(128, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    other_session = 3.0 * frames + 2.0
    with torch.no_grad():
        before = model(frames).argmax(1)
        shifted = model(other_session).argmax(1)
    assert (shifted != before).float().mean() > 0.2  # the shift changes the answers
    used = adapt_batch_norm(model, batches_of(other_session), model)
    with torch.no_grad():
        adapted = model(other_session).argmax(1)
    assert used == len(other_session)
    assert (adapted == before).float().mean() > 0.95


def test_adaptation_changes_only_the_batch_norm_statistics():
    model = shifted_session_model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    adapt_batch_norm(model, batches_of(torch.randn(64, 3, 8, 8) * 2 + 1), model)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])}
    assert changed == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert not any(m.training for m in model.modules())
    assert model[1].momentum == 0.1


def test_the_statistics_are_the_frames_own():
    model = shifted_session_model()
    frames = torch.randn(96, 3, 8, 8) * 2 + 1
    adapt_batch_norm(model, batches_of(frames), model)
    with torch.no_grad():
        conv = model[0](frames)
    torch.testing.assert_close(model[1].running_mean, conv.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)


def test_too_few_frames_keep_the_training_statistics():
    model = shifted_session_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frames = torch.randn(MIN_FRAMES - 1, 3, 8, 8) + 5
    assert adapt_batch_norm(model, batches_of(frames, 8), model) == 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_model_without_batch_norm_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.GroupNorm(1, 2))
    assert batch_norm_layers(model) == []
    assert adapt_batch_norm(model, batches_of(torch.randn(64, 3, 4, 4)), model) == 0


def test_the_sample_is_seeded_and_bounded():
    assert list(sample_indices(5)) == [0, 1, 2, 3, 4]
    a, b = sample_indices(10_000, 512), sample_indices(10_000, 512)
    assert len(a) == 512 and (a == b).all() and (a[1:] > a[:-1]).all()


# ------------------------------------------------------------------------------------------ test.py
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dataset):
    from clipmg.data import load_labels

    torch.manual_seed(0)
    net = create_model("openclip:clipmg-r10-half", image_size=32)
    assert batch_norm_layers(net)
    names = list(load_labels(tiny_dataset / "Clip_label.csv").values())
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", net, {
        "class_ids": [1, 2, 3, 4], "class_names": names,
        "prompts": PromptSet(templates=["a person {}"]).to_dict(), "preprocess": net.preprocess_config})


@pytest.fixture(scope="module")
def frames_csv(tiny_dataset, tmp_path_factory):
    frame = pd.read_excel(tiny_dataset / "training" / "train.xlsx", dtype=str)
    assert len(frame) >= MIN_FRAMES
    path = tmp_path_factory.mktemp("csv") / "frames.csv"
    frame.assign(Path=[str(tiny_dataset / "training" / p) for p in frame["Path"]]).to_csv(path, index=False)
    return path


def test_predict_adapts_by_default_and_not_when_told(checkpoint, frames_csv, tmp_path):
    adapted = predict_csv(checkpoint, frames_csv, output=tmp_path / "a.csv", device="cpu", workers=0)
    plain = predict_csv(checkpoint, frames_csv, output=tmp_path / "p.csv", device="cpu", workers=0, adapt_bn=False)
    assert adapted["bn_adapted_on"] == adapted["n_rows"] and plain["bn_adapted_on"] == 0
    assert json.loads((tmp_path / "a_metrics.json").read_text())["bn_adapted_on"] == adapted["n_rows"]
    a = pd.read_csv(tmp_path / "a.csv")["top1_prob"].to_numpy()
    p = pd.read_csv(tmp_path / "p.csv")["top1_prob"].to_numpy()
    assert abs(a - p).max() > 1e-4


def test_without_adaptation_test_py_scores_with_the_checkpoints_statistics(checkpoint, frames_csv, tmp_path):
    main(["predict", "--imagepathscsv", str(frames_csv), "--checkpoint", str(checkpoint), "--device", "cpu",
          "--workers", "0", "--output", str(tmp_path / "p.csv"), "--no-adapt-bn"])
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu")
    frame = pd.read_csv(frames_csv)
    from clipmg.inference import iter_image_batches

    logits = torch.cat([classifier.logits(b.images) for b in iter_image_batches(
        frame["Path"].tolist(), range(len(frame)), [], classifier.transform(), device=classifier.device,
        source="t", workers=0)])
    expected = logits.softmax(1).max(1).values.numpy()
    got = pd.read_csv(tmp_path / "p.csv")["score"].to_numpy()
    assert abs(expected - got).max() < 1e-5


def test_adaptation_leaves_the_checkpoint_on_disk_alone(checkpoint, frames_csv, tmp_path):
    before = (checkpoint / "model.safetensors").read_bytes()
    main(["predict", "--imagepathscsv", str(frames_csv), "--checkpoint", str(checkpoint), "--device", "cpu",
          "--workers", "0", "--output", str(tmp_path / "a.csv")])
    assert (checkpoint / "model.safetensors").read_bytes() == before


def test_a_few_frames_are_classified_with_the_training_statistics(checkpoint, frames_csv, tmp_path):
    few = tmp_path / "few.csv"
    pd.read_csv(frames_csv).head(MIN_FRAMES - 1).to_csv(few, index=False)
    summary = predict_csv(checkpoint, few, device="cpu", workers=0)
    assert summary["bn_adapted_on"] == 0


def test_the_runs_test_part_is_scored_as_test_py_scores_it(tmp_path, tiny_train_settings):
    from clipmg.synthetic import make_demo_data
    from clipmg.training import TrainConfig, train

    data = tmp_path / "data"
    make_demo_data(data, classes=4, clips=40, frames_per_clip=4, size=32, workers=0)
    settings = {**tiny_train_settings, "metadata": str(data / "training" / "train.xlsx"),
                "labels": str(data / "Clip_label.csv"), "model": "openclip:clipmg-r10-half", "image_size": 32,
                "epochs": 1, "test_fraction": 0.3}
    summary = train(TrainConfig(**settings).validate())
    assert summary["test"] is not None
    assert summary["test"]["bn_adapted_on"] >= MIN_FRAMES
