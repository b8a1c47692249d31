"""What every section of the settings shares: the sections in `--help` order, each choice's
vocabulary from its owner, and `Settings`, the base of a section (its flags, flat values and
checks).

A section's fields are its settings, named as the flags are (`epochs` is `--epochs`); a field
standing for several flags (the data section's `Columns`) lists them in its metadata, so the
flat names of `config.yaml` and of a checkpoint's `train` record stay what they were.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from clipmg.data.samplers import BALANCED_SAMPLERS
from clipmg.data.splits import SPLIT_BY
from clipmg.errors import DataError
from clipmg.inference.tta import TTA_MODES
from clipmg.losses import CLASS_WEIGHTINGS, LOSS_NAMES
from clipmg.metrics import VALIDATION_METRICS
from clipmg.models.hybrid import POOLINGS
from clipmg.models.registry import HEAD_KINDS, POSE_FUSIONS
from clipmg.models.temporal import TEMPORAL_HEADS
from clipmg.training.texts import CONTRASTS, TEXT_SOURCES
from clipmg.utils import PRECISIONS

#: the sections of the settings, in the order `clipmg train --help` shows them
SECTIONS = {
    "data": ("data", "the frames, their columns, the split, image decoding"),
    "model": ("model and wrappers", "the backend, its weights, the head, pose inputs, clips"),
    "text": ("text and prompts", "what the frames are contrasted with"),
    "loss": ("loss", "the contrastive or classification loss, and the class balance"),
    "optimisation": ("optimisation", "epochs, batches, learning rates, schedule, precision"),
    "tuning": ("fine-tuning tools", "EMA, layer decay, LoRA, gradient checkpointing (docs/fine_tuning.md), "
                                    "validation TTA"),
    "run": ("run", "where it is written, the seed, the device, what picks best/, augmentation, projector"),
}
#: each choice field's vocabulary, from its owner (the module that acts on the value)
CHOICES = {
    "split_by": SPLIT_BY,
    "loss": LOSS_NAMES,
    "contrast": CONTRASTS,
    "text_source": TEXT_SOURCES,
    "balanced_sampler": BALANCED_SAMPLERS,
    "scheduler": ("cosine", "plateau", "none"),  # built by training.optim (which imports the settings)
    "precision": PRECISIONS,
    "pooling": POOLINGS,
    "head": HEAD_KINDS,
    "init_head": ("random", "zeroshot"),  # applied by training.model (which imports the settings)
    "class_weighting": CLASS_WEIGHTINGS,
    "pose_fusion": POSE_FUSIONS,
    "tta": TTA_MODES,
    "temporal": TEMPORAL_HEADS,
    "monitor": VALIDATION_METRICS,
}


def setting(default, help: str):
    """A field with its one-line help (`clipmg train --help` adds the default)."""
    return field(default=default, metadata={"help": help})


def settings_of(factory, flags: tuple[tuple[str, str, str], ...]):
    """A field holding an object whose attributes are flags: (flag, attribute, help) each."""
    return field(default_factory=factory, metadata={"flags": flags})


@dataclass(frozen=True)
class Flag:
    """One setting as users give it: a flag, a key of config.yaml and of a checkpoint's record."""

    name: str
    section: str
    help: str
    default: Any
    kinds: tuple[type, ...]  # the types a value may have, None left out


#: a rule of `unused_settings`: (settings, the mode that uses them, why they are unused now)
Unused = tuple[tuple[str, ...], str, str]


class Settings:
    """The base of a section: a dataclass whose fields are settings (`setting`, `settings_of`)."""

    section: ClassVar[str]

    @classmethod
    def flags(cls) -> list[Flag]:
        hints = typing.get_type_hints(cls)
        flags = []
        for f in dataclasses.fields(cls):
            if "flags" in f.metadata:
                default = f.default_factory()
                flags += [Flag(name, cls.section, help, getattr(default, attribute), (str,))
                          for name, attribute, help in f.metadata["flags"]]
            else:
                kinds = tuple(a for a in typing.get_args(hints[f.name]) if a is not type(None))
                flags.append(Flag(f.name, cls.section, f.metadata["help"], f.default, kinds or (hints[f.name],)))
        return flags

    def to_flat(self) -> dict[str, Any]:
        flat = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "flags" in f.metadata:
                flat.update({name: getattr(value, attribute) for name, attribute, _ in f.metadata["flags"]})
            else:
                flat[f.name] = value
        return flat

    @classmethod
    def from_flat(cls, values: dict[str, Any]):
        """The section of the flat `values` it owns (the others are left to their sections)."""
        fields = {}
        for f in dataclasses.fields(cls):
            if "flags" in f.metadata:
                given = {attribute: values[name] for name, attribute, _ in f.metadata["flags"] if name in values}
                if given:
                    fields[f.name] = f.default_factory(**given)
            elif f.name in values:
                fields[f.name] = values[f.name]
        return cls(**fields)

    def replace(self, **flat):
        """This section with some of its flat settings changed."""
        return self.from_flat({**self.to_flat(), **flat})

    def validate(self):
        """Each choice within its owner's vocabulary, then the section's own checks."""
        for name, value in self.to_flat().items():
            if name in CHOICES and value not in CHOICES[name]:
                raise DataError(f"config: {name}={value!r} is not one of {', '.join(CHOICES[name])}")
        self.check()
        return self

    def check(self) -> None:
        """The section's rules on its values; raises DataError naming the setting."""

    def unused_settings(self) -> typing.Iterator[Unused]:
        """The section's settings its other settings leave unused (`Unused` rules)."""
        return iter(())


def at_least(name: str, value, least, optional: bool = False) -> None:
    """DataError unless `value` >= `least` (or None, when the setting is `optional`)."""
    if optional and value is None:
        return
    if value < least:
        raise DataError(f"config: {name} must be at least {least}, got {value}")
