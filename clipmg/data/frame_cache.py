"""Frames decoded once per run: a memory-mapped uint8 array of every frame at the size the
transform needs, filled on first use and read by every later epoch.

Each frame is decoded (`load_image`, JPEGs at a reduced DCT scale), its long side cropped to the
aspect the training crops use, and shrunk so that its shorter side is `size`; it is stored in a
fixed box of `box x box` pixels with its own height and width beside it. The arrays live in files
of a temporary folder, so that DataLoader workers share them (each worker opens the files; what
one worker decodes, every other reads) and a dataset larger than memory stays on disk.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from pathlib import Path

import cv2
import numpy as np

from clipmg.data.images import load_image

#: the widest aspect a cached frame keeps (the training crops' widest, see transforms.TRAIN_CROP_RATIO)
MAX_ASPECT = 1.25


def fit_frame(image: np.ndarray, size: int, max_aspect: float = MAX_ASPECT) -> np.ndarray:
    """Crop the long side to `max_aspect`, then shrink (never enlarge) to a shorter side of `size`."""
    height, width = image.shape[:2]
    if width > height * max_aspect:
        keep = round(height * max_aspect)
        image = image[:, (width - keep) // 2:(width - keep) // 2 + keep]
    elif height > width * max_aspect:
        keep = round(width * max_aspect)
        image = image[(height - keep) // 2:(height - keep) // 2 + keep]
    height, width = image.shape[:2]
    shorter = min(height, width)
    if shorter > size:
        scale = size / shorter
        new = (max(1, min(round(width * scale), math.floor(size * max_aspect))),
               max(1, min(round(height * scale), math.floor(size * max_aspect))))
        image = cv2.resize(image, new, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


class FrameCache:
    """`len(paths)` frames, each decoded on its first `get` and kept at `size` (see module doc)."""

    def __init__(self, paths: list[str], size: int, folder: str | Path | None = None):
        self.paths = list(paths)
        self.size = int(size)
        self.box = math.floor(self.size * MAX_ASPECT)
        self.folder = Path(tempfile.mkdtemp(prefix="clipmg-frames-", dir=folder))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        n = len(self.paths)
        np.lib.format.open_memmap(self.folder / "pixels.npy", mode="w+", dtype=np.uint8,
                                  shape=(n, self.box, self.box, 3)).flush()
        np.lib.format.open_memmap(self.folder / "shapes.npy", mode="w+", dtype=np.int32, shape=(n, 2)).flush()
        self._arrays = None

    def _open(self):
        if self._arrays is None:
            self._arrays = (np.load(self.folder / "pixels.npy", mmap_mode="r+"),
                            np.load(self.folder / "shapes.npy", mmap_mode="r+"))
        return self._arrays

    def __getstate__(self) -> dict:
        # workers reopen the files; the folder belongs to the process that made it
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_finalizer"] = None
        return state

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> np.ndarray:
        """The frame at `index`, decoded now if no one has yet (an ImageError names the file)."""
        pixels, shapes = self._open()
        height, width = shapes[index]
        if height == 0:
            frame = fit_frame(load_image(self.paths[index], max_size=self.size), self.size)
            height, width = frame.shape[:2]
            pixels[index, :height, :width] = frame
            shapes[index] = (height, width)  # written last: a frame counts once its pixels are in
            return frame
        return np.array(pixels[index, :height, :width])
