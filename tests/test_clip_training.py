"""Training clip models (`--clip-frames K --temporal ...`): the trainer batches clips, learns, resumes
exactly, records K and the head in the checkpoint, and its validation is what evaluate reports
for the clip model."""

from __future__ import annotations

import json

import pytest
import torch

from clipmg.errors import DataError
from clipmg.inference import evaluate_checkpoint
from clipmg.training import TrainConfig, Trainer, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clip_settings(settings: dict, **overrides) -> dict:
    # a clip model's batch_size counts clips: 4 clips of 3 frames
    return {**settings, "clip_frames": 3, "temporal": "transformer", "batch_size": 4, **overrides}


def make_trainer(settings: dict) -> Trainer:
    trainer = Trainer(TrainConfig(**settings).validate())
    trainer.setup()
    return trainer


@pytest.mark.parametrize("temporal,head", [("transformer", "contrastive"), ("attention", "linear"), ("mean", "contrastive")])
def test_the_trainer_batches_clips_and_learns(tiny_train_settings, fit_one_batch, temporal, head):
    trainer = make_trainer(clip_settings(tiny_train_settings, temporal=temporal, head=head, scheduler="none"))
    assert len(trainer.train_dataset) == trainer.train_items["video_id"].nunique() == len(trainer.train_items)
    assert trainer.batch_items == 4
    batch = next(iter(trainer.train_loader))
    assert batch["image"].shape == (4, 3, 3, 64, 64) and batch["frames"].shape == (4, 3)
    losses = fit_one_batch(trainer, 15)
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_clip_model_gets_the_frame_models_steps_and_items_a_step(tiny_train_settings):
    frames = make_trainer({**tiny_train_settings, "batch_size": 6})
    clips = make_trainer(clip_settings(tiny_train_settings, batch_size=6, clip_frames=2))
    assert clips.batch_items == 6 and len(clips.train_dataset) < len(frames.train_dataset)
    assert clips.steps_per_epoch == frames.steps_per_epoch
    drawn = [index for batch in clips.train_loader for index in batch["index"].tolist()]
    assert len(drawn) >= len(frames.train_dataset) and set(drawn) == set(range(len(clips.train_dataset)))


def test_resume_of_a_clip_run_is_exact(tiny_train_settings, tmp_path, assert_same_weights):
    from test_train import Interrupt, interrupt_after

    settings = clip_settings(tiny_train_settings, epochs=2, save_every_steps=1)
    reference = train(TrainConfig(**{**settings, "output": str(tmp_path / "reference")}).validate())
    stopped = make_trainer({**settings, "output": str(tmp_path / "stopped")})
    interrupt_after(stopped, stopped.steps_per_epoch + 1)  # dies inside the second epoch
    stopped.setup = lambda: None
    with pytest.raises(Interrupt):
        stopped.fit()
    resumed = train(TrainConfig(**{**settings, "output": str(tmp_path / "stopped")}).validate(),
                    resume=tmp_path / "stopped")
    assert resumed["best"] == pytest.approx(reference["best"], abs=1e-6)
    assert_same_weights(tmp_path / "reference" / "last", tmp_path / "stopped" / "last")


@pytest.mark.parametrize("temporal", ["transformer", "mean"])
def test_the_checkpoint_records_k_and_the_validation_is_evaluates(tiny_train_settings, tmp_path, temporal):
    """Validation scores clips as evaluate (and test.py) does: K frames of each, or under the mean
    head all of them."""
    summary = train(TrainConfig(**clip_settings(tiny_train_settings, epochs=1, temporal=temporal)).validate())
    run = tmp_path / "run"
    model = json.loads((run / "best" / "config.json").read_text())["model"]
    assert (model["backend"], model["clip_frames"], model["temporal"]) == ("clip", 3, temporal)
    metrics = evaluate_checkpoint(run / "best", run / "split.csv", split=run / "split.csv", workers=0,
                                  out_dir=tmp_path / "eval")
    assert metrics["clip_model_n_clips"] == summary["best"]["n_images"]  # validation scores clips
    assert metrics["clip_model_top1"] == pytest.approx(summary["best"]["top1"], abs=1e-6)
    assert metrics["clip_model_top5"] == pytest.approx(summary["best"]["top5"], abs=1e-6)


def test_a_frame_checkpoint_fine_tunes_into_a_clip_model(tiny_train_settings, tmp_path):
    train(TrainConfig(**{**tiny_train_settings, "epochs": 1}).validate())
    trainer = make_trainer(clip_settings(tiny_train_settings, temporal="mean", init_from=str(tmp_path / "run" / "best"),
                                         output=str(tmp_path / "clips")))
    from clipmg.checkpoint import load_checkpoint

    frame_model, _ = load_checkpoint(tmp_path / "run" / "best")
    batch = next(iter(trainer.train_loader))
    with torch.no_grad():
        clips = trainer.model.eval().encode_image(batch["image"], normalize=False)
        frames = frame_model.encode_image(batch["image"].flatten(0, 1)).unflatten(0, batch["image"].shape[:2])
    torch.testing.assert_close(clips, frames.mean(dim=1))


@pytest.mark.parametrize("overrides,message", [
    ({"temporal": "transformer"}, "give clip_frames"),
    ({"clip_frames": 0}, "at least 1"),
    ({"clip_frames": 4, "hand_crops": True}, "choose one"),
])
def test_clip_settings_are_checked_before_training(tiny_train_settings, overrides, message):
    with pytest.raises(DataError, match=message):
        TrainConfig(**{**tiny_train_settings, **overrides}).validate()


def test_the_labs_clip_models_keep_the_frame_models_batch_size(tiny_train_settings, tmp_path):
    """A clip model's batch_size counts clips, as many as the frame model's frames a step; the
    lab's clip approaches pass the frame model's batch size on unchanged."""
    from clipmg.jobs.approaches import temporal
    from clipmg.jobs.approaches.registry import ComparisonContext

    ctx = ComparisonContext(metadata=tmp_path, labels=tmp_path, split=tmp_path, out_dir=tmp_path,
                            base_settings={**tiny_train_settings, "batch_size": 32})
    settings = ctx.settings("clip", **temporal.clip_settings(ctx, "mean"))
    assert settings["batch_size"] == 32 and settings["clip_frames"] == temporal.CLIP_FRAMES
