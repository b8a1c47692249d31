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

import numpy as np

from clipmg.data.images import MAX_ASPECT, fit_frame, load_image


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
