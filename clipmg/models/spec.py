"""What to build, said once and without naming a backend's options: a `ModelSpec` (the backend
by name and the settings any backend may read) and its `WrapSpec` (the wrappers around it).

The trainer builds one from its model settings; `registry.create_model_from_spec` asks the
backend that accepts the name to turn it into that backend's own options (`options_from_spec`),
and each backend says which settings it reads (`spec_settings`), so a setting the chosen backend
would ignore can be refused by name (`registry.unread_settings`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipmg.errors import ModelError


@dataclass(frozen=True)
class WrapSpec:
    """The wrappers, in `compose_model`'s order: pose fusion, a linear head, hand crops, and with
    `clip_frames` a clip model (`temporal` is its head, read only then)."""

    head: str | None = None
    num_classes: int | None = None
    head_dropout: float = 0.0
    pose_fusion: str | None = None
    keypoint_cache: str | None = None
    hand_crops: bool = False
    hand_margin: float | None = None
    hand_full_frame: bool = True
    clip_frames: int | None = None
    temporal: str | None = None

    def options(self) -> dict[str, Any]:
        """`compose_model` / `create_model` keyword options."""
        options = dataclasses.asdict(self)
        options["temporal"] = self.temporal if self.clip_frames else None
        return options


@dataclass(frozen=True)
class ModelSpec:
    """A backend by name and every setting a backend may read (the field names are the train
    settings' names); each backend reads its own share (`spec_settings`)."""

    name: str
    pretrained: Any = None
    image_size: int | None = None
    temperature: float | None = None
    learn_temperature: bool = True
    image_encoder: str | None = None
    text_encoder: str | None = None
    image_pretrained: Any = None
    text_pretrained: bool | None = None
    pooling: str = "cls"
    embed_dim: int | None = None
    wrap: WrapSpec = field(default_factory=WrapSpec)


#: the settings of a spec a backend may read, in the order a refusal names them
SPEC_SETTINGS = tuple(f.name for f in dataclasses.fields(ModelSpec) if f.name not in ("name", "wrap"))


def wants_pretrained(pretrained) -> bool | str:
    """A `pretrained` setting (a string or None) as True/False, or a local weights file."""
    if pretrained is None or isinstance(pretrained, bool):
        return bool(pretrained)
    text = str(pretrained).strip()
    if text.lower() in ("", "none", "false", "0", "no"):
        return False
    if text.lower() in ("true", "1", "yes", "default", "imagenet"):
        return True
    if not Path(text).is_file():
        raise ModelError(f"pretrained weights file not found: {text} (or give true/false)")
    return text
