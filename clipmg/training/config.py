"""Training configuration: `TrainConfig`, one section of settings each (`clipmg.training.settings`:
data, model, text, loss, optimisation, fine-tuning tools, run), each owning and checking its own
settings; `TrainConfig` keeps the rules across sections. Loaded from YAML (and, in `clipmg train`,
overridden by a flag per setting). The resolved configuration is saved with each run and inside
each checkpoint, flat (`to_dict`): the names are the flags, as they always were, so files of
earlier versions load and files written now load in earlier versions.

    TrainConfig(metadata="train.xlsx", epochs=3)        # flat settings, as users give them
    TrainConfig.from_flat({"metadata": ..., ...})         # the same, an unknown name a DataError
    cfg.optim.epochs, cfg.network.spec(num_classes)     # read through the sections
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clipmg.errors import DataError
from clipmg.training.settings import (
    BACKEND_SETTINGS,
    CHOICES,
    DEFAULT_TEST_FRACTION,
    SECTIONS,
    DataSettings,
    Flag,
    LossSettings,
    ModelSettings,
    OptimSettings,
    RunSettings,
    TextSettings,
    TuningSettings,
)
from clipmg.utils import atomic_write_text

__all__ = ["BACKEND_SETTINGS", "CHOICES", "DEFAULT_TEST_FRACTION", "FLAGS", "SECTIONS", "TrainConfig",
           "config_from_dict", "load_config", "save_config", "with_settings_of_its_time"]

#: TrainConfig's attribute of each section -> its type, in `SECTIONS` order
SECTION_TYPES = {"data": DataSettings, "network": ModelSettings, "text": TextSettings, "objective": LossSettings,
                 "optim": OptimSettings, "tuning": TuningSettings, "run": RunSettings}
#: every setting as users give it, in `--help` and `config.yaml` order
FLAGS: list[Flag] = [flag for kind in SECTION_TYPES.values() for flag in kind.flags()]
DEFAULTS = {flag.name: flag.default for flag in FLAGS}
#: flat name -> the attribute of its section
_OWNER = {flag.name: attribute for attribute, kind in SECTION_TYPES.items() for flag in kind.flags()}


@dataclass(init=False)
class TrainConfig:
    """Every setting of a run, by section. Built from flat settings (`TrainConfig(epochs=3)`, the
    names are the flags) or from sections (`TrainConfig(optim=OptimSettings(epochs=3))`); a flat
    name still reads and sets its setting (`cfg.epochs`), for code written before the sections."""

    data: DataSettings
    network: ModelSettings
    text: TextSettings
    objective: LossSettings
    optim: OptimSettings
    tuning: TuningSettings
    run: RunSettings

    def __init__(self, *, data: DataSettings | None = None, network: ModelSettings | None = None,
                 text: TextSettings | None = None, objective: LossSettings | None = None,
                 optim: OptimSettings | None = None, tuning: TuningSettings | None = None,
                 run: RunSettings | None = None, **settings: Any):
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise TypeError(f"TrainConfig got unknown setting(s) {', '.join(unknown)}")
        given = {"data": data, "network": network, "text": text, "objective": objective, "optim": optim,
                 "tuning": tuning, "run": run}
        for attribute, kind in SECTION_TYPES.items():
            own = {name: value for name, value in settings.items() if _OWNER[name] == attribute}
            section = given[attribute]
            section = kind.from_flat(own) if section is None else section.replace(**own)
            object.__setattr__(self, attribute, section)

    @classmethod
    def from_flat(cls, values: dict, source: str = "config") -> TrainConfig:
        """A config of flat settings as `config.yaml`, a checkpoint's `train` record or the Python
        API give them: `-` read as `_`, renamed settings under their new names, an unknown name
        a DataError naming `source`."""
        values = {k.replace("-", "_"): v for k, v in values.items()}
        for old, (new, convert) in RENAMED.items():
            if old in values and new not in values:
                values[new] = convert(values.pop(old))
        unknown = sorted(set(values) - set(DEFAULTS))
        if unknown:
            raise DataError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
        return cls(**values)

    def sections(self) -> list:
        return [getattr(self, attribute) for attribute in SECTION_TYPES]

    def to_dict(self) -> dict:
        """The flat settings, in `FLAGS` order: what config.yaml and checkpoints store."""
        return {name: value for section in self.sections() for name, value in section.to_flat().items()}

    def replace(self, **settings: Any) -> TrainConfig:
        """A copy with some flat settings changed."""
        return TrainConfig(**{**self.to_dict(), **settings})

    def __getattr__(self, name: str):
        attribute = _OWNER.get(name)
        if attribute is None or attribute not in self.__dict__:
            raise AttributeError(f"TrainConfig has no setting {name!r}")
        return self.__dict__[attribute].to_flat()[name]

    def __setattr__(self, name: str, value) -> None:
        if name in _OWNER:
            name, value = _OWNER[name], getattr(self, _OWNER[name]).replace(**{name: value})
        object.__setattr__(self, name, value)

    def validate(self) -> TrainConfig:
        """Each section's checks, then a setting the chosen mode would ignore is refused."""
        for section in self.sections():
            section.validate()
        self._refuse_ignored_settings()
        return self

    def given(self, *names: str) -> list[str]:
        """The settings among `names` set to something other than their default."""
        flat = self.to_dict()
        return [name for name in names if flat[name] != DEFAULTS[name]]

    def _refuse_ignored_settings(self) -> None:
        """A setting the chosen mode would not use is an error, never silently dropped
        (`--init-from`'s are checked against the checkpoint, training.model)."""
        rules = itertools.chain(*(section.unused_settings() for section in self.sections()), self._across_sections())
        flat = self.to_dict()
        for names, mode, reason in rules:
            ignored = self.given(*names)
            if ignored:
                shown = ", ".join(f"{name}={flat[name]!r}" for name in ignored)
                raise DataError(f"config: {shown} would be ignored: {reason}; drop {'it' if len(ignored) == 1 else 'them'}"
                                f" or {mode}")

    def _across_sections(self):
        """The rules across sections: the head decides which loss settings are read."""
        if self.network.head == "linear":
            yield ("loss", "contrast", "text_source"), "use --head contrastive", \
                "a linear head trains with (class-weighted, focal) cross-entropy, not a contrastive loss"
        else:
            yield ("class_weighting", "focal_gamma", "head_dropout"), "use --head linear", \
                "they shape a linear head's loss, and the head is contrastive"


#: settings of earlier versions -> (their new name, how the value carries over)
RENAMED = {"warmup_steps": ("warmup", float)}


#: settings added later, and the value that gives a run saved before them its old behaviour
SETTINGS_OF_EARLIER_RUNS = {"test_fraction": 0.0, "cache_frames": False, "spread_prompts": False}


def with_settings_of_its_time(record: dict) -> dict:
    """A saved run's settings, completed so that the run continues as it started: a run saved
    before a setting existed gets the value that reproduces it (no test part, no frame cache)."""
    record = dict(record)
    for name, value in SETTINGS_OF_EARLIER_RUNS.items():
        if name not in record and not (name == "test_fraction" and record.get("split")):
            record[name] = value
    return record


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    """`TrainConfig.from_flat`, by its earlier name."""
    return TrainConfig.from_flat(values, source)


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise DataError(f"config file {path} must hold a mapping of settings")
    return values


def save_config(config: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
