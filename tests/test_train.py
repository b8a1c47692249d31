"""The trainer end to end on the tiny model: loss falls, resume is exact, NaN keeps the last
checkpoint, and two gloo processes see the same first-step loss as one process (frames, and
clips of a clip model)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from clipmg.checkpoint import load_checkpoint
from clipmg.errors import TrainingError
from clipmg.training import TrainConfig, Trainer, train


def make_trainer(settings: dict, **overrides) -> Trainer:
    trainer = Trainer(TrainConfig(**{**settings, **overrides}).validate())
    trainer.setup()
    return trainer


@pytest.mark.parametrize("loss,contrast", [("ce", "classes"), ("ce", "batch"), ("js", "classes"),
                                           ("soft_ce", "batch")])
def test_loss_falls_when_fitting_one_batch(tiny_train_settings, fit_one_batch, loss, contrast):
    trainer = make_trainer(tiny_train_settings, loss=loss, contrast=contrast, scheduler="none")
    losses = fit_one_batch(trainer, 15)
    assert losses[-1] < 0.7 * losses[0], losses


def test_fit_writes_best_last_and_history(tiny_train_settings, tmp_path):
    summary = train(TrainConfig(**{**tiny_train_settings, "tensorboard": True}).validate())
    run = tmp_path / "run"
    assert summary["epochs_run"] == 2
    for name in ("best", "last"):
        assert (run / name / "model.safetensors").is_file()
        config = json.loads((run / name / "config.json").read_text())
        assert config["class_names"] and config["class_ids"] == [1, 2, 3, 4]
    assert (run / "last" / "trainer_state.pt").is_file()
    assert (run / "config.yaml").is_file() and (run / "split.csv").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert summary["split"]["leakage"] == 0.0
    card = (run / "best" / "README.md").read_text()  # the model card, from config.json
    config = json.loads((run / "best" / "config.json").read_text())
    assert f"| lr_image | {config['train']['lr_image']} |" in card and "**Leakage: 0.0**" in card
    assert f"| top-1 | {config['metrics']['top1']:.4f} |" in card
    for key in ("top1", "top5", "balanced_accuracy", "clip_top1", "loss"):
        assert key in summary["best"]
    model, _ = load_checkpoint(run / "best")
    assert not model.training


class Interrupt(Exception):
    pass


def interrupt_after(trainer: Trainer, steps: int) -> None:
    original = trainer.train_step
    calls = {"n": 0}

    def counting_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > steps:
            raise Interrupt
        return original(*args, **kwargs)

    trainer.train_step = counting_step


def test_resume_after_kill_mid_epoch_matches_uninterrupted_run(tiny_train_settings, tmp_path, assert_same_weights):
    settings = {**tiny_train_settings, "epochs": 3, "save_every_steps": 1}
    reference = train(TrainConfig(**{**settings, "output": str(tmp_path / "reference")}).validate())

    stopped = Trainer(TrainConfig(**{**settings, "output": str(tmp_path / "stopped")}).validate())
    stopped.setup()
    steps_per_epoch = stopped.steps_per_epoch
    interrupt_after(stopped, steps_per_epoch + 1)  # dies inside the second epoch
    stopped.setup = lambda: None
    with pytest.raises(Interrupt):
        stopped.fit()
    saved = torch.load(tmp_path / "stopped" / "last" / "trainer_state.pt", weights_only=True)
    assert saved["trainer"]["epoch"] == 1 and saved["trainer"]["step_in_epoch"] == 1

    resumed = train(TrainConfig(**{**settings, "output": str(tmp_path / "stopped")}).validate(),
                    resume=tmp_path / "stopped")
    assert resumed["best"] == pytest.approx(reference["best"], abs=1e-6)
    assert_same_weights(tmp_path / "reference" / "last", tmp_path / "stopped" / "last")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_train_settings, tmp_path, monkeypatch):
    import clipmg.training.trainer as trainer_module

    trainer = make_trainer(tiny_train_settings, epochs=3)
    original = trainer_module.contrastive_loss
    calls = {"n": 0}

    def loss_turning_nan(*args, **kwargs):
        calls["n"] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if calls["n"] > trainer.steps_per_epoch else value

    monkeypatch.setattr(trainer_module, "contrastive_loss", loss_turning_nan)
    trainer.setup = lambda: None
    with pytest.raises(TrainingError, match="last good checkpoint"):
        trainer.fit()
    state = torch.load(tmp_path / "run" / "last" / "trainer_state.pt", weights_only=True)
    assert state["trainer"]["epoch"] == 1
    model, _ = load_checkpoint(tmp_path / "run" / "last")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_init_from_fine_tunes_with_fresh_optimizer(tiny_train_settings, tmp_path):
    train(TrainConfig(**{**tiny_train_settings, "epochs": 1}).validate())
    summary = train(TrainConfig(**{**tiny_train_settings, "epochs": 1, "init_from": str(tmp_path / "run" / "best"),
                                   "output": str(tmp_path / "finetuned")}).validate())
    assert summary["epochs_run"] == 1


FIRST_STEP_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from clipmg.training import TrainConfig, Trainer
    from clipmg.training.distributed import cleanup
    settings = json.loads(sys.argv[1])
    trainer = Trainer(TrainConfig(**settings).validate())
    trainer.setup()
    batch = next(iter(trainer.train_loader))
    torch.manual_seed(0)
    loss = trainer.train_step(batch, torch.Generator().manual_seed(0))
    if trainer.env.is_main:
        print("LOSS", repr(loss.item()))
    # Leaving with the gloo group alive let its threads be torn down mid-flight at exit: CI saw
    # a rank abort ("terminate called without an active exception") after the step had passed.
    torch.distributed.barrier() if trainer.env.enabled else None
    cleanup(trainer.env)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("contrast,clips", [("batch", {}), ("classes", {}),
                                            ("batch", {"clip_frames": 2, "temporal": "transformer"})])
def test_two_gloo_processes_match_one_process_first_step(tiny_train_settings, tmp_path, contrast, clips):
    script = tmp_path / "first_step.py"
    script.write_text(FIRST_STEP_SCRIPT)
    settings = {**tiny_train_settings, "model": "openclip:clipmg-tiny-vit", "contrast": contrast,
                "device": "cpu", "batch_size": 4, **clips}
    single = subprocess.run([sys.executable, str(script), json.dumps({**settings, "batch_size": 8,
                                                                       "output": str(tmp_path / "one")})],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                             str(script), json.dumps({**settings, "output": str(tmp_path / "two")})],
                            capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]

    def loss_of(output: str) -> float:
        return float(next(line for line in output.splitlines() if line.startswith("LOSS")).split()[1])

    assert loss_of(double.stdout) == pytest.approx(loss_of(single.stdout), rel=1e-5)


def _epoch_images(trainer, epoch: int) -> dict[int, torch.Tensor]:
    trainer.train_sampler.set_epoch(epoch)
    images = {}
    for batch in trainer.train_loader:
        for index, image in zip(batch["index"].tolist(), batch["image"]):
            images.setdefault(index, image)
    return images


def test_augmentation_changes_each_epoch_and_ignores_the_number_of_workers(tiny_train_settings):
    """Persistent workers keep their own copy of the dataset: the epoch must reach them too."""
    from clipmg.training.trainer import Trainer

    def setup(workers: int) -> Trainer:
        trainer = Trainer(TrainConfig(**{**tiny_train_settings, "workers": workers}).validate())
        trainer.setup()
        return trainer

    in_process, with_worker = setup(0), setup(1)
    first, second = _epoch_images(in_process, 0), _epoch_images(in_process, 1)
    assert set(first) == set(second)
    assert sum(not torch.equal(first[i], second[i]) for i in first) > len(first) // 2
    worker_first, worker_second = _epoch_images(with_worker, 0), _epoch_images(with_worker, 1)
    for index in first:
        torch.testing.assert_close(worker_first[index], first[index])
        torch.testing.assert_close(worker_second[index], second[index])


def test_an_unknown_monitor_fails_before_training(tiny_train_settings):
    """--monitor is checked with the rest of the config, not after a first epoch of training."""
    from clipmg.errors import DataError

    with pytest.raises(DataError, match="monitor='top_1' is not a validation metric"):
        TrainConfig(**{**tiny_train_settings, "monitor": "top_1"}).validate()
    TrainConfig(**{**tiny_train_settings, "monitor": "balanced_accuracy"}).validate()
