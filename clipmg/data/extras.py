"""Per-frame model inputs besides the image (a pose model's keypoints, ...), by name.

A model lists the names it needs in `extra_inputs`; a loader registered here under that name
turns a list of image paths (the metadata's `Path` values) into one row per path. Training,
validation and prediction all go through `load_extra_fields`, so a model sees the same inputs
everywhere.

A horizontal flip of the frame (training with `hflip`) must flip the field's values with it
wherever they are image positions: a field registers how (`mirror=`), and `FrameDataset` applies
it to the rows of the frames it flips. A field that registered none cannot be flipped (a
DataError) rather than silently disagreeing with its image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clipmg.errors import DataError, ModelError

#: (paths, image roots, options) -> array with one row per path. `options` is the run's training
#: configuration (a dict); a loader reads its own settings from it.
ExtraFieldLoader = Callable[[Sequence[str], Sequence[Path], Mapping], np.ndarray]

#: values of one frame (a row of the loader's array, or a stack of rows) -> the values of the
#: horizontally flipped frame, as a new array.
ExtraFieldMirror = Callable[[np.ndarray], np.ndarray]

EXTRA_FIELD_LOADERS: dict[str, ExtraFieldLoader] = {}
EXTRA_FIELD_MIRRORS: dict[str, ExtraFieldMirror] = {}


def position_free(values: np.ndarray) -> np.ndarray:
    """The `mirror` of a field that holds no image positions: a flip leaves it as it is."""
    return values


def register_extra_field(name: str, mirror: ExtraFieldMirror | None = None):
    """Decorator: `@register_extra_field("keypoints", mirror=mirror_keypoints) def load(paths, roots, options): ...`.

    `mirror` maps a frame's values to those of the horizontally flipped frame; pass
    `position_free` for values a flip does not change. Without one the field cannot be used
    with flips (see `extra_field_mirror`).
    """

    def register(loader: ExtraFieldLoader) -> ExtraFieldLoader:
        EXTRA_FIELD_LOADERS[name] = loader
        if mirror is None:
            EXTRA_FIELD_MIRRORS.pop(name, None)
        else:
            EXTRA_FIELD_MIRRORS[name] = mirror
        return loader

    return register


def extra_field_mirror(name: str) -> ExtraFieldMirror:
    """How field `name` follows a horizontal flip of its frame; a DataError if it never said."""
    if name not in EXTRA_FIELD_MIRRORS:
        raise DataError(f"horizontal flips (hflip) need to mirror the per-frame {name!r} inputs with the image, "
                        f"and {name!r} registers no mirror function: pass register_extra_field({name!r}, "
                        f"mirror=...), or mirror=position_free if a flip leaves its values unchanged; "
                        f"or train without hflip")
    return EXTRA_FIELD_MIRRORS[name]


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
