"""The run section: where it is written, the seed, the device, what picks best/, augmentation,
the projector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clipmg.errors import DataError
from clipmg.metrics import VALIDATION_METRICS
from clipmg.training.preemption import parse_signal
from clipmg.training.settings.base import Settings, at_least, setting


@dataclass
class RunSettings(Settings):
    section: ClassVar[str] = "run"

    output: str = setting("checkpoints/run", "run folder: best/, last/, config.yaml, split.csv, metrics")
    seed: int = setting(42, "seed of the split, the initialisation and the batches")
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 ...")
    monitor: str = setting("top1", "validation metric that picks best/ and early stopping")
    patience: int | None = setting(None, "early stopping: epochs without a better --monitor (default: never stop)")
    save_every_steps: int | None = setting(None, "also save last/ (resumable) every N optimizer steps")
    preempt_signal: str | None = setting(None, "a signal that, like SIGTERM, stops training after the current "
                                               "step with last/ saved (e.g. USR1)")
    tensorboard: bool = setting(True, "write TensorBoard logs to the run folder")
    hflip: bool = setting(False, "training augmentation: mirror frames at random")
    embed_every: int | None = setting(None, "write a projector of the validation frames every N epochs")
    embed_max_images: int = setting(500, "projector: at most this many frames (class-stratified)")

    def validate(self):
        if self.monitor not in VALIDATION_METRICS:
            raise DataError(f"config: monitor={self.monitor!r} is not a validation metric; choose from "
                            f"{', '.join(VALIDATION_METRICS)}")
        return super().validate()

    def check(self) -> None:
        parse_signal(self.preempt_signal)
        at_least("patience", self.patience, 0, optional=True)
        for name in ("embed_every", "save_every_steps"):
            at_least(name, getattr(self, name), 1, optional=True)

    def unused_settings(self):
        if not self.embed_every:
            return iter([(("embed_max_images",), "give --embed-every", "no projector is written without "
                                                                       "--embed-every")])
        return iter(())
