"""`--resume RUN`: the run's exact state from its `last/` checkpoint, or, for a run stopped
before its first save (killed during start-up), its settings alone and a start from the
beginning, so that a scheduler's requeue loop (`clipmg train --resume RUN` after every
preemption) survives a preemption that comes early."""

from __future__ import annotations

from pathlib import Path

from clipmg.checkpoint import CONFIG, TRAINER_STATE, WEIGHTS, load_trainer_state
from clipmg.training.lora import load_training_weights
from clipmg.training.state import TrainerState
from clipmg.utils import logger


def resumable_checkpoint(run: Path) -> Path | None:
    """The complete checkpoint to resume `run` from: `last/`, else the `.last.old` that a kill
    between the two renames of a save leaves, else `run` itself when it is such a checkpoint."""
    for folder in (run / "last", run / ".last.old", run):
        if all((folder / name).is_file() for name in (CONFIG, WEIGHTS, TRAINER_STATE)):
            return folder
    return None


def restore(trainer, run: Path) -> bool:
    """Load `run`'s model, optimiser, schedule, scaler, EMA and progress into `trainer`; False
    (and a message) when the run has no complete checkpoint yet, to start it afresh."""
    folder = resumable_checkpoint(run)
    if folder is None:
        logger.warning("%s has its settings but no complete checkpoint (it stopped before its first save): "
                       "starting it from the beginning", run)
        return False
    state = load_trainer_state(folder)
    load_training_weights(trainer.model, folder / WEIGHTS, state.get("adapters"))
    if trainer.ema is not None:  # a run started without EMA starts it at the resumed weights
        trainer.ema.module.load_state_dict(state.get("ema") or trainer.model.state_dict())
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None and state.get("scheduler"):
        trainer.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.state = TrainerState.from_dict(state["trainer"])
    logger.info("resumed %s at epoch %d, step %d", run, trainer.state.epoch, trainer.state.step_in_epoch)
    return True
