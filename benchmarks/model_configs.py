"""The benchmarked models: open_clip names, clipmg's model configs, and the size of a
model's text tower (whether it is CLIP-sized decides which targets apply)."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from clipmg.errors import DataError

CLIP_SIZED_TEXT = {"width": 512, "layers": 12}  # a text tower at least this big is "CLIP-sized"


def open_clip_name(model: str) -> str:
    if not model.startswith("openclip:"):
        raise DataError(f"bench: model {model!r} is not an openclip:<model>; open_clip_train can only "
                        "train open_clip models, so the comparison needs one")
    return model.split(":", 1)[1]


def model_config_dir() -> Path:
    """The folder of clipmg's open_clip model configs (package data of clipmg.models)."""
    return Path(str(resources.files("clipmg.models") / "model_configs"))


@functools.cache
def register_model_configs() -> None:
    """Make clipmg's configs known to open_clip in this process (once)."""
    import open_clip

    open_clip.add_model_config(model_config_dir())


def text_tower_size(model: str) -> dict:
    import open_clip

    register_model_configs()
    text = (open_clip.get_model_config(open_clip_name(model)) or {}).get("text_cfg", {})
    return {"width": int(text.get("width", 0)), "layers": int(text.get("layers", 0)),
            "context_length": int(text.get("context_length", 0))}


def has_clip_sized_text(model: str) -> bool:
    size = text_tower_size(model)
    return all(size[key] >= minimum for key, minimum in CLIP_SIZED_TEXT.items())
