"""Training: configuration, optimiser, distributed plumbing and the trainer loop."""

from pathlib import Path

from clipmg.errors import DataError
from clipmg.train.config import TrainConfig, add_config_arguments, load_config, resolve_config
from clipmg.train.trainer import Trainer, train


def load_run_config(run: str | Path) -> dict:
    """The resolved settings a run saved, so `--resume` continues it unchanged."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise DataError(f"{run} is not a training run folder (no config.yaml); --resume takes the --output "
                        "folder of an earlier `clipmg train`")
    return load_config(path)


__all__ = ["TrainConfig", "Trainer", "add_config_arguments", "load_config", "load_run_config",
           "resolve_config", "train"]
