"""A torch Dataset of metadata frames: image tensor, class index, position in the DataFrame."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from clipmg.data.images import load_image
from clipmg.data.labels import class_index_map
from clipmg.errors import DataError, ImageError
from clipmg.utils import logger


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
    """

    def __init__(
        self,
        df: pd.DataFrame,
        image_root: str | os.PathLike,
        transform: Callable[[np.ndarray], torch.Tensor],
        skip_bad_images: bool = False,
        class_index: Mapping[int, int] | Iterable[int] | None = None,
        extra_fields: Mapping[str, np.ndarray | torch.Tensor] | None = None,
    ):
        self.image_root = Path(image_root)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.class_index = class_index_map(df["class_id"] if class_index is None else class_index)
        self.paths = [str(self.image_root / p) for p in df["path"]]
        self.rows = df["row"].to_numpy() if "row" in df else np.arange(2, len(df) + 2)
        self.class_indices = self._map_class_ids(df)
        self.extra_fields = check_extra_fields(extra_fields or {}, len(df))
        # Decode JPEGs only as large as the transform needs (see load_image's max_size).
        self.decode_size = getattr(transform, "decode_size", None)

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

    @property
    def num_classes(self) -> int:
        return len(self.class_index)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict | None:
        try:
            image = load_image(self.paths[index], max_size=self.decode_size)
        except ImageError as error:
            if not self.skip_bad_images:
                raise ImageError(f"{error} (metadata row {self.rows[index]})") from error
            logger.warning("skipping a bad image: %s", error)
            return None
        item = {
            "image": self.transform(image),
            "class_index": int(self.class_indices[index]),
            "index": int(index),
        }
        for key, values in self.extra_fields.items():
            item[key] = torch.as_tensor(values[index])
        return item


def check_extra_fields(fields: Mapping[str, np.ndarray | torch.Tensor], rows: int) -> dict:
    reserved = {"image", "class_index", "index"} & set(fields)
    if reserved:
        raise DataError(f"extra field(s) {sorted(reserved)} would replace the dataset's own item entries")
    for key, values in fields.items():
        if len(values) != rows:
            raise DataError(f"extra field {key!r} has {len(values)} rows; the metadata has {rows}")
    return dict(fields)


def collate_frames(items: list[dict | None]) -> dict | None:
    """Batch the items that loaded; None when no image of the batch could be read."""
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    return default_collate(kept)
