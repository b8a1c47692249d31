"""`CheckpointRecord`: what a checkpoint folder's config.json holds, as one typed record.

Every writer of checkpoints (the trainer, the linear probe, prompt learning, WiSE-FT, the import
and the open_clip export) builds one and `save_checkpoint` writes it; every reader takes its
fields from one instead of looking keys up in the parsed JSON. The file keeps the keys it always
had, so a folder written before the record existed loads unchanged, and one written now loads in
an earlier version: a key this record does not know is kept in `extra` and written back as it was.

A field that is None was not recorded and is left out of the file (an imported checkpoint has
no metrics; a mid-epoch `last/` records empty ones). `train` is the exception that readers lean
on: the run's settings, an empty dict when none were recorded, and left out of the file then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1


@dataclass
class CheckpointRecord:
    class_ids: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    #: the model's own config (`model_config`): what rebuilds it; `save_checkpoint` fills it in
    model: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    prompts: dict | None = None  # the prompt set's `to_dict`
    preprocess: dict | None = None  # image size, mean, std, interpolation
    #: the run's resolved settings (TrainConfig's fields by name); empty when none were recorded
    train: dict = field(default_factory=dict)
    metrics: dict | None = None  # validation metrics of the weights saved
    epoch: int | None = None  # epochs finished when saved
    split: dict | None = None  # the split's report (sizes, leakage) or its source
    probe: dict | None = None  # `clipmg probe`: how the linear head was fitted
    prompt_learning: dict | None = None  # `clipmg prompts --learn`: settings and baselines
    wise: dict | None = None  # `clipmg wise`: the two ends and alpha
    imported: dict | None = None  # `clipmg import`: the file converted
    open_clip: dict | None = None  # `clipmg export --format open_clip`: open_clip's files
    #: keys of config.json this version does not know, written back as they were
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = set(self.extra) & set(_field_names())
        if clash:
            raise ValueError(f"extra keys {sorted(clash)} are fields of CheckpointRecord; set the fields instead")

    @classmethod
    def from_json_dict(cls, data: Mapping) -> CheckpointRecord:
        """The record of a parsed config.json (of any version): missing keys take their defaults."""
        known = set(_field_names())
        values = {key: value for key, value in data.items() if key in known}
        values["train"] = dict(values.get("train") or {})
        for key in ("class_ids", "class_names", "model"):
            if values.get(key) is None:
                values.pop(key, None)
        extra = {key: value for key, value in data.items() if key not in known}
        return cls(**values, extra=extra)

    def to_json_dict(self) -> dict:
        """The dict config.json holds: the keys recorded, in the order of the fields, then `extra`."""
        out = {"format_version": self.format_version, "model": self.model}
        for name in _field_names():
            value = getattr(self, name)
            if name in out or value is None or (name == "train" and not value):
                continue
            out[name] = value
        out.update(self.extra)
        return out


def as_record(config: CheckpointRecord | Mapping | None) -> CheckpointRecord:
    """A record from either a record or a parsed config.json (None: an empty record)."""
    if isinstance(config, CheckpointRecord):
        return config
    return CheckpointRecord.from_json_dict(config or {})


def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(CheckpointRecord) if f.name != "extra")
