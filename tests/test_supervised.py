"""Supervised baselines (`--head linear`): backbones by name, classification losses, the trainer's
features (checkpoints, early stopping, TensorBoard, resume), the zero-shot-initialised head, and
test.py / predict / evaluate on their checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clipmg import data as cdata
from clipmg.checkpoint import load_checkpoint
from clipmg.errors import DataError, ModelError
from clipmg.inference import Classifier, evaluate_checkpoint, predict_csv
from clipmg.jobs.embed import embed_checkpoint
from clipmg.losses import class_weights_from_counts, classification_loss
from clipmg.models import SupervisedModel, create_model, create_model_from_config
from clipmg.training import TrainConfig, Trainer, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BACKBONES = [("timm:resnet50", 32), ("timm:tf_efficientnetv2_b0", 32), ("torchvision:alexnet", 64)]


def linear_settings(settings: dict, model: str = "timm:resnet18", size: int = 32, **overrides) -> dict:
    return {**settings, "model": model, "head": "linear", "image_size": size, "epochs": 1,
            "max_steps_per_epoch": 2, **overrides}


def images_of(frames: pd.DataFrame, root, preprocess: dict) -> torch.Tensor:
    transform = cdata.transform_for_model(preprocess, train=False)
    return torch.stack([transform(cdata.load_image(root / p)) for p in frames["path"]])


# ------------------------------------------------------------------------------ losses
def test_focal_loss_with_gamma_zero_is_cross_entropy_and_follows_its_formula():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 5, generator=generator) * 3
    targets = torch.randint(5, (12,), generator=generator)
    weights = torch.rand(5, generator=generator) + 0.1
    torch.testing.assert_close(classification_loss(logits, targets), F.cross_entropy(logits, targets))
    torch.testing.assert_close(classification_loss(logits, targets, weights),
                               F.cross_entropy(logits, targets, weight=weights))
    p = torch.softmax(logits.double(), dim=1)[torch.arange(12), targets].numpy()
    w = weights.double().numpy()[targets.numpy()]
    expected = (w * (1 - p) ** 2 * -np.log(p)).sum() / w.sum()
    assert classification_loss(logits, targets, weights, focal_gamma=2.0).item() == pytest.approx(expected, rel=1e-5)
    bias = torch.randn(5, generator=generator)
    torch.testing.assert_close(classification_loss(logits, targets, logit_bias=bias),
                               F.cross_entropy(logits + bias, targets))


def test_class_weights_follow_inverse_and_sqrt_frequency():
    counts = torch.tensor([1.0, 4.0, 0.0, 16.0])
    inverse = class_weights_from_counts(counts, "inverse")
    sqrt = class_weights_from_counts(counts, "sqrt")
    assert class_weights_from_counts(counts, "none") is None
    present = np.array([1.0, 4.0, 16.0])
    for weights, raw in ((inverse, 1 / present), (sqrt, 1 / np.sqrt(present))):
        np.testing.assert_allclose(weights.numpy()[[0, 1, 3]], raw / raw.mean(), rtol=1e-6)
        assert weights[2] == 0


# ------------------------------------------------------------------------------ models
@pytest.mark.parametrize("name,size", BACKBONES)
def test_backbone_rebuilds_from_config_and_trains_with_the_trainer(name, size, tiny_train_settings, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, image_size=size).eval()
    images = torch.randn(2, 3, size, size)
    rebuilt = create_model_from_config(json.loads(json.dumps(model.model_config)))
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval().class_logits(images), model.class_logits(images))
    assert model.class_logits(images).shape == (2, 4)
    features = model.encode_image(images)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(2))
    assert model.preprocess_config["image_size"] == size
    with pytest.raises(ModelError, match="no text tower"):
        model.encode_text(["a"])

    summary = train(TrainConfig(**linear_settings(tiny_train_settings, name, size, max_steps_per_epoch=1,
                                                  class_weighting="sqrt", focal_gamma=1.0)).validate())
    assert summary["epochs_run"] == 1 and "top1" in summary["best"]
    loaded, config = load_checkpoint(tmp_path / "run" / "best")
    assert isinstance(loaded, SupervisedModel) and config["model"]["backbone"] == name


def test_bad_backbones_and_heads_say_what_is_wrong(tiny_train_settings):
    with pytest.raises(ModelError, match="at least 63"):
        create_model("torchvision:alexnet", num_classes=3, image_size=32)
    with pytest.raises(ModelError, match="unknown timm model"):
        create_model("timm:resnet5O", num_classes=3)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("timm:resnet18")
    with pytest.raises(ModelError, match="supported: alexnet"):
        create_model("torchvision:vgg11", num_classes=3)
    with pytest.raises(DataError, match="--head linear"):
        Trainer(TrainConfig(**{**tiny_train_settings, "model": "timm:resnet18"}).validate()).setup()
    with pytest.raises(DataError, match="init_head=zeroshot needs"):
        TrainConfig(**{**tiny_train_settings, "head": "linear", "init_head": "zeroshot"}).validate()


def test_linear_head_loss_falls_on_one_batch(tiny_train_settings, fit_one_batch):
    trainer = Trainer(TrainConfig(**linear_settings(tiny_train_settings, scheduler="none", lr_heads=1e-2,
                                                    lr_image=1e-3)).validate())
    trainer.setup()
    losses = fit_one_batch(trainer, 10)
    assert losses[-1] < 0.7 * losses[0], losses


# ------------------------------------------------------------------ trainer features
def test_early_stopping_and_tensorboard_for_a_frozen_backbone(tiny_train_settings, tmp_path):
    # Frozen backbone (BatchNorm in eval) and no head learning: validation cannot improve.
    settings = linear_settings(tiny_train_settings, epochs=4, patience=0, freeze_image=True, lr_heads=0.0,
                               tensorboard=True)
    summary = train(TrainConfig(**settings).validate())
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == 1
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    first, _ = load_checkpoint(tmp_path / "run" / "best")
    last, _ = load_checkpoint(tmp_path / "run" / "last")
    for key, value in first.state_dict().items():
        torch.testing.assert_close(value, last.state_dict()[key])


def test_resume_of_a_linear_head_run_matches_the_uninterrupted_run(tiny_train_settings, tmp_path,
                                                                   assert_same_weights):
    settings = linear_settings(tiny_train_settings, epochs=2, max_steps_per_epoch=None, save_every_steps=1,
                               head_dropout=0.3)
    reference = train(TrainConfig(**{**settings, "output": str(tmp_path / "reference")}).validate())
    stopped = Trainer(TrainConfig(**{**settings, "output": str(tmp_path / "stopped")}).validate())
    stopped.setup()
    original, calls = stopped.train_step, {"n": 0}

    def dies_after_some_steps(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > stopped.steps_per_epoch + 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    stopped.train_step = dies_after_some_steps
    stopped.setup = lambda: None
    with pytest.raises(KeyboardInterrupt):
        stopped.fit()
    resumed = train(TrainConfig(**{**settings, "output": str(tmp_path / "stopped")}).validate(),
                    resume=tmp_path / "stopped")
    assert resumed["best"] == pytest.approx(reference["best"], abs=1e-6)
    assert_same_weights(tmp_path / "reference" / "last", tmp_path / "stopped" / "last")


# ------------------------------------------------------------------ zero-shot head
@pytest.fixture(scope="module")
def contrastive_checkpoint(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("contrastive")
    train(TrainConfig(metadata=str(tiny_dataset / "training" / "train.xlsx"),
                      labels=str(tiny_dataset / "Clip_label.csv"), model="openclip:clipmg-tiny", epochs=1,
                      batch_size=8, workers=0, warmup=1, max_steps_per_epoch=2, output=str(out / "run"),
                      tensorboard=False, seed=1, prompts="photo").validate())
    return out / "run" / "best"


def test_zero_shot_head_starts_at_the_zero_shot_classifier(contrastive_checkpoint, tiny_train_settings,
                                                           tiny_dataset):
    trainer = Trainer(TrainConfig(**{**tiny_train_settings, "head": "linear", "init_head": "zeroshot",
                                     "init_from": str(contrastive_checkpoint)}).validate())
    trainer.setup()
    zero_shot = Classifier.from_checkpoint(contrastive_checkpoint)
    frames = trainer.val_df.head(6)
    images = images_of(frames, tiny_dataset / "training", zero_shot.preprocess)
    expected = zero_shot.logits(images)
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trainer.model.class_logits(images), expected, rtol=1e-5, atol=1e-5)
    # the stored prompt set ("photo") was used, not the default one
    assert "photo" in zero_shot.config["prompts"]["name"]
    random_head = Trainer(TrainConfig(**{**tiny_train_settings, "head": "linear",
                                         "init_from": str(contrastive_checkpoint)}).validate())
    random_head.setup()
    assert not torch.allclose(random_head.model.eval().class_logits(images), expected, atol=1e-3)


def test_zero_shot_head_fine_tunes_only_image_side_and_checkpoint_rebuilds(contrastive_checkpoint,
                                                                           tiny_train_settings, tmp_path):
    settings = {**tiny_train_settings, "head": "linear", "init_head": "zeroshot", "epochs": 1,
                "max_steps_per_epoch": 2, "init_from": str(contrastive_checkpoint)}
    train(TrainConfig(**settings).validate())
    tuned, config = load_checkpoint(tmp_path / "run" / "last")
    source, _ = load_checkpoint(contrastive_checkpoint)
    assert config["model"]["backbone"] == "clip"
    text_keys = [k for k in source.state_dict() if source.parameter_part(k) == "text" and k != "logit_scale"]
    assert text_keys
    for key in text_keys:  # the text tower is kept frozen
        torch.testing.assert_close(tuned.state_dict()["backbone." + key], source.state_dict()[key])


# ------------------------------------------------------------- predict / evaluate
def test_test_py_predict_and_evaluate_work_on_a_supervised_checkpoint(tiny_train_settings, tiny_dataset, tmp_path):
    train(TrainConfig(**linear_settings(tiny_train_settings)).validate())
    run = tmp_path / "run"
    model, config = load_checkpoint(run / "best")
    metrics = evaluate_checkpoint(run / "best", run / "split.csv", split=run / "split.csv", subset="val",
                                  workers=0, out_dir=tmp_path / "eval")
    assert metrics["top1"] == pytest.approx(config["metrics"]["top1"], abs=1e-9)
    assert metrics["n_images"] == config["metrics"]["n_images"]

    frames = pd.read_csv(run / "split.csv")
    frames = frames[frames["split"] == "val"].drop(columns="split")
    csv = tiny_dataset / "val_for_test.csv"
    frames.to_csv(csv, index=False)
    summary = predict_csv(run / "best", csv, "Path", output=tmp_path / "pred.csv", workers=0)
    predictions = pd.read_csv(tmp_path / "pred.csv")
    images = images_of(frames.rename(columns={"Path": "path"}), tiny_dataset / "training", model.preprocess_config)
    with torch.no_grad():
        expected = model.class_logits(images).argmax(1).numpy()
    ids = np.array(config["class_ids"])
    np.testing.assert_array_equal(predictions["pred_class"].to_numpy(), ids[expected])
    assert summary["metrics"]["top1"] == pytest.approx(metrics["top1"])

    embedded = embed_checkpoint(run / "best", run / "split.csv", tmp_path / "projector", split=run / "split.csv",
                                max_images=0, workers=0, map_method=None)
    assert embedded["n_images"] == metrics["n_images"] and embedded["n_prompts"] == 4
    assert embedded["top1"] == pytest.approx(metrics["top1"])
