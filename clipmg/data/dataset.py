"""A torch Dataset of metadata frames: image tensor, class index, position in the DataFrame."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from clipmg.data.extras import extra_field_mirror, position_free
from clipmg.data.frame_cache import FrameCache
from clipmg.data.images import load_image
from clipmg.data.labels import class_index_map
from clipmg.errors import DataError, ImageError
from clipmg.utils import logger

#: Mixed into the flip generator's seed: the flips draw from a stream of their own, not the
#: transform's (albumentations seeds each of its steps with the same seed, so a draw from
#: `default_rng(seed)` would repeat one of theirs).
FLIP_STREAM = 0x68666C6970  # "hflip"


class FrameDataset(Dataset):
    """Frames of a standard metadata DataFrame (see `read_metadata`).

    Items are `{"image": tensor, "class_index": int, "index": position in df}`, plus one entry
    per `extra_fields` key (an array aligned with the rows of `df`, e.g. a pose model's
    "keypoints" of shape (len(df), K)): the row's value as a tensor.
    `class_index` maps class ids to indices 0..C-1: a {id: index} dict, or any iterable of
    ids (a `load_labels` dict gives its ids) whose sorted order gives the indices. Pass the
    label file's ids so that train and validation sets agree even when a class is absent
    from one of them; the default is the sorted ids present in `df`.

    With `skip_bad_images`, an image that cannot be read is logged and the item is None
    (`collate_frames` drops it; count skips from the batch sizes, as workers cannot share a
    counter). Otherwise the ImageError, naming the file and metadata row, propagates.

    With `cache_frames`, each image is decoded once, at the size the transform needs, and kept
    for later epochs (`clipmg.data.frame_cache`); the transform still runs on every item.

    With `hflip`, each item is flipped horizontally with probability 1/2: the decoded image
    before the transform (the transform's crops, rotation and jitter are symmetric, so this is
    as random as flipping after them), and every extra field's row through the field's
    registered mirror function (`clipmg.data.extras`: keypoints are mirrored, position-free
    fields unchanged), so the image and its keypoints always agree. A field with no registered
    mirror is a DataError here, as is a transform that flips by itself while extra fields that
    are positions ride along (they would not be mirrored).
    The flip is drawn from `set_random_seed`'s seed (on a stream of its own, so it is
    independent of the transform's draws) or, unseeded, from torch's generator (which DataLoader
    seeds per worker).
    """

    def __init__(
        self,
        df: pd.DataFrame,
        image_root: str | os.PathLike,
        transform: Callable[[np.ndarray], torch.Tensor],
        skip_bad_images: bool = False,
        class_index: Mapping[int, int] | Iterable[int] | None = None,
        extra_fields: Mapping[str, np.ndarray | torch.Tensor] | None = None,
        hflip: bool = False,
        cache_frames: bool = False,
    ):
        self.image_root = Path(image_root)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.class_index = class_index_map(df["class_id"] if class_index is None else class_index)
        self.paths = [str(self.image_root / p) for p in df["path"]]
        self.rows = df["row"].to_numpy() if "row" in df else np.arange(2, len(df) + 2)
        self.class_indices = self._map_class_ids(df)
        self.extra_fields = check_extra_fields(extra_fields or {}, len(df))
        self.hflip = bool(hflip)
        self.mirrors = {key: extra_field_mirror(key) for key in self.extra_fields} if self.hflip else {}
        check_transform_flips(transform, self.extra_fields)
        self._flip_rng: np.random.Generator | None = None
        # Decode JPEGs only as large as the transform needs (see load_image's max_size).
        self.decode_size = getattr(transform, "decode_size", None)
        self.cache = FrameCache(self.paths, self.decode_size) if cache_frames and self.decode_size else None

    def _map_class_ids(self, df: pd.DataFrame) -> np.ndarray:
        ids = df["class_id"].to_numpy()
        unknown = sorted(set(ids.tolist()) - set(self.class_index))
        if unknown:
            first = int(np.flatnonzero(ids == unknown[0])[0])
            raise DataError(
                f"class id(s) {unknown} (first at metadata row {self.rows[first]}) are not "
                f"among the model's classes {sorted(self.class_index)}"
            )
        return np.array([self.class_index[int(i)] for i in ids], dtype=np.int64)

    def set_random_seed(self, seed: int | None) -> None:
        """Seed the augmentation of the next items: the transform's albumentations pipeline
        and the flips (None: unseeded again)."""
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)
        self._flip_rng = None if seed is None else np.random.default_rng([FLIP_STREAM, int(seed) % 2**63])

    def _draw_flip(self) -> bool:
        if self._flip_rng is None:
            return bool(torch.rand(()).item() < 0.5)
        return bool(self._flip_rng.random() < 0.5)

    @property
    def num_classes(self) -> int:
        return len(self.class_index)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict | None:
        try:
            if self.cache is not None:
                image = self.cache.get(index)
            else:
                image = load_image(self.paths[index], max_size=self.decode_size)
        except ImageError as error:
            if not self.skip_bad_images:
                raise ImageError(f"{error} (metadata row {self.rows[index]})") from error
            logger.warning("skipping a bad image: %s", error)
            return None
        flip = self.hflip and self._draw_flip()
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
        item = {
            "image": self.transform(image),
            "class_index": int(self.class_indices[index]),
            "index": int(index),
        }
        for key, values in self.extra_fields.items():
            row = values[index]
            if flip:
                row = self.mirrors[key](np.asarray(row))
            item[key] = torch.as_tensor(row)
        return item


def check_extra_fields(fields: Mapping[str, np.ndarray | torch.Tensor], rows: int) -> dict:
    reserved = {"image", "class_index", "index"} & set(fields)
    if reserved:
        raise DataError(f"extra field(s) {sorted(reserved)} would replace the dataset's own item entries")
    for key, values in fields.items():
        if len(values) != rows:
            raise DataError(f"extra field {key!r} has {len(values)} rows; the metadata has {rows}")
    return dict(fields)


def check_transform_flips(transform, fields: Mapping) -> None:
    """A DataError if `transform` flips images by itself (`create_transform(hflip=True)`) while
    extra fields that are image positions, or may be, come with them unmirrored."""
    if not getattr(transform, "hflip", False):
        return
    positional = []
    for key in fields:
        try:
            if extra_field_mirror(key) is not position_free:
                positional.append(key)
        except DataError:
            positional.append(key)
    if positional:
        raise DataError(f"the image transform flips images by itself, which would leave the per-frame "
                        f"{', '.join(map(repr, positional))} inputs unmirrored: create it without hflip "
                        f"and pass hflip=True to FrameDataset, which mirrors them with the image")


def collate_frames(items: list[dict | None]) -> dict | None:
    """Batch the items that loaded; None when no image of the batch could be read."""
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    return default_collate(kept)
