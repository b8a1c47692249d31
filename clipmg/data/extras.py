"""Per-frame model inputs besides the image (a pose model's keypoints, ...), by name.

A model lists the names it needs in `extra_inputs`; a loader registered here under that name
turns a list of image paths (the metadata's `Path` values) into one row per path. Training,
validation and prediction all go through `load_extra_fields`, so a model sees the same inputs
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clipmg.errors import ModelError

#: (paths, image roots, options) -> array with one row per path. `options` is the run's training
#: configuration (a dict); a loader reads its own settings from it.
ExtraFieldLoader = Callable[[Sequence[str], Sequence[Path], Mapping], np.ndarray]

EXTRA_FIELD_LOADERS: dict[str, ExtraFieldLoader] = {}


def register_extra_field(name: str):
    """Decorator: `@register_extra_field("keypoints") def load(paths, roots, options): ...`."""

    def register(loader: ExtraFieldLoader) -> ExtraFieldLoader:
        EXTRA_FIELD_LOADERS[name] = loader
        return loader

    return register


def load_extra_fields(names: Sequence[str], paths: Sequence[str], roots: Sequence[Path],
                      options: Mapping | None = None) -> dict[str, np.ndarray]:
    """`{name: array aligned with paths}` for each of `names` (a model's `extra_inputs`)."""
    fields = {}
    for name in names:
        if name not in EXTRA_FIELD_LOADERS:
            raise ModelError(f"the model needs per-frame {name!r} inputs and no loader is registered for them; "
                             f"known: {', '.join(sorted(EXTRA_FIELD_LOADERS)) or 'none'}")
        values = np.asarray(EXTRA_FIELD_LOADERS[name](list(map(str, paths)), [Path(r) for r in roots],
                                                      dict(options or {})))
        if len(values) != len(paths):
            raise ModelError(f"the {name!r} loader returned {len(values)} rows for {len(paths)} images")
        fields[name] = values
    return fields
