"""Training: configuration, optimiser, distributed plumbing and the trainer loop."""

from pathlib import Path

from clipmg.errors import DataError
from clipmg.training.config import (
    TrainConfig,
    config_from_dict,
    load_config,
    with_settings_of_its_time,
)
from clipmg.training.trainer import Trainer, train


def load_run_config(run: str | Path) -> dict:
    """The resolved settings a run saved, so `--resume` continues it unchanged."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise DataError(f"{run} is not a training run folder (no config.yaml); --resume takes the --output "
                        "folder of an earlier `clipmg train`")
    return with_settings_of_its_time(load_config(path))


__all__ = ["TrainConfig", "Trainer", "config_from_dict", "load_config", "load_run_config", "train"]
