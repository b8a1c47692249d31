"""Clips as model input: K frames of a clip (`video_id`, in `frame_id` order) at a time.

K frames are drawn from uniform segments of the clip (TSN sampling): in training a random frame
of each segment, in evaluation each segment's centre, so evaluation always sees the same frames.
A clip shorter than K repeats frames (the segments then share frames), so any clip gives K.

`ClipDataset` draws one augmentation per clip: every frame of a clip is transformed with the
same seed, so they get the same crop, rotation, colour jitter and flip, and the movement between
frames is the clip's, not the augmentation's. With `augment_apart` each frame gets a draw of its
own (for a head that pools frames as a set, where there is no movement to keep).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from clipmg.data.dataset import FrameDataset
from clipmg.errors import DataError

#: Mixed into the seed of the segment offsets: a stream of their own, apart from the transform's.
OFFSET_STREAM = 0x636C6970  # "clip"
#: Mixed into the seeds of frames augmented apart (`augment_apart`).
FRAME_STREAM = 0x6672616D  # "fram"


def clip_positions(n_frames: int, clip_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """K = `clip_frames` indices into a clip of `n_frames` frames (in order), one per uniform
    segment: the segment's centre, or with `rng` a random point of it."""
    if n_frames < 1 or clip_frames < 1:
        raise DataError(f"a clip needs at least one frame and K >= 1, got {n_frames} frames and K={clip_frames}")
    offsets = np.full(clip_frames, 0.5) if rng is None else rng.random(clip_frames)
    positions = np.floor((np.arange(clip_frames) + offsets) * n_frames / clip_frames).astype(np.int64)
    return np.minimum(positions, n_frames - 1)


def clip_table(frames: pd.DataFrame) -> pd.DataFrame:
    """One row per clip of a standard metadata DataFrame, in order of first appearance: the
    columns of the clip's first frame (in `frame_id` order; its class is the clip's), plus
    `positions` (the row positions in `frames` of the clip's frames, in frame order) and
    `n_frames`."""
    if frames.empty:
        raise DataError("no frames to group into clips")
    codes = pd.factorize(frames["video_id"].astype(str))[0]
    order = np.lexsort((np.arange(len(frames)), frames["frame_id"].to_numpy(), codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    groups = np.split(order, starts[1:])
    table = frames.iloc[[group[0] for group in groups]].reset_index(drop=True)
    table["positions"] = groups
    table["n_frames"] = [len(group) for group in groups]
    return table


class ClipDataset(Dataset):
    """Clips of a standard metadata DataFrame, K frames each.

    Items are `{"image": (K, 3, S, S), "class_index": int, "index": clip position in `clips`,
    "frames": (K,) row positions in `df` of the frames used}`, plus each extra field's rows
    stacked as (K, ...). `train=True` draws the frames at random within their segments,
    otherwise segment centres. The frames are those of `FrameDataset(df, ...)` (same transform,
    extra fields, flips and bad-image handling): an unreadable frame with `skip_bad_images` is
    replaced by the clip's other sampled frames, and a clip none of whose sampled frames can
    be read is None (dropped by `collate_frames`).

    `set_random_seed(seed)` fixes the next clips' segment offsets and their one augmentation
    draw (the same seed for each of their frames, or with `augment_apart` a seed per frame drawn
    from it); unseeded, a draw from torch's generator (which DataLoader seeds per worker) takes
    its place.
    """

    def __init__(self, df: pd.DataFrame, image_root: str | os.PathLike, transform: Callable, clip_frames: int,
                 train: bool = False, skip_bad_images: bool = False,
                 class_index: Mapping[int, int] | Iterable[int] | None = None,
                 extra_fields: Mapping[str, np.ndarray | torch.Tensor] | None = None, hflip: bool = False,
                 cache_frames: bool = False, augment_apart: bool = False):
        if clip_frames < 1:
            raise DataError(f"clip_frames must be at least 1, got {clip_frames}")
        self.frames = FrameDataset(df.reset_index(drop=True), image_root, transform, skip_bad_images=skip_bad_images,
                                   class_index=class_index, extra_fields=extra_fields, hflip=hflip,
                                   cache_frames=cache_frames)
        self.clips = clip_table(df.reset_index(drop=True))
        self.clip_frames, self.train, self.augment_apart = int(clip_frames), bool(train), bool(augment_apart)
        self._seed: int | None = None

    def set_random_seed(self, seed: int | None) -> None:
        self._seed = seed

    @property
    def num_classes(self) -> int:
        return self.frames.num_classes

    def __len__(self) -> int:
        return len(self.clips)

    def sampled_positions(self, index: int, seed: int | None) -> np.ndarray:
        """Row positions (in `df`) of the K frames of clip `index`."""
        members = self.clips["positions"].iat[index]
        rng = None
        if self.train:
            rng = np.random.default_rng([OFFSET_STREAM, int(seed) % 2**63])
        return members[clip_positions(len(members), self.clip_frames, rng)]

    def frame_seed(self, seed: int, position: int) -> int:
        """The augmentation seed of frame `position` of a clip drawn with `seed`: the clip's own
        (one draw for all its frames), or with `augment_apart` one of the frame's."""
        if not self.augment_apart:
            return seed
        return int(np.random.default_rng([FRAME_STREAM, int(seed) % 2**63, int(position)]).integers(2**62))

    def __getitem__(self, index: int) -> dict | None:
        seed = self._seed
        if self.train and seed is None:
            seed = int(torch.randint(2**62, ()).item())
        positions = self.sampled_positions(index, seed)
        loaded: dict[int, dict] = {}
        for position in dict.fromkeys(positions.tolist()):
            if self.train:
                self.frames.set_random_seed(self.frame_seed(seed, position))
            item = self.frames[position]
            if item is not None:
                loaded[position] = item
        if self.train:
            self.frames.set_random_seed(self._seed)
        if not loaded:
            return None
        kept = np.array([p for p in positions.tolist() if p in loaded], dtype=np.int64)
        kept = kept[clip_positions(len(kept), self.clip_frames)]  # refill the places of unreadable frames
        items = [loaded[p] for p in kept.tolist()]
        clip = {key: torch.stack([item[key] for item in items]) for key in items[0]
                if key not in ("class_index", "index")}
        clip["class_index"] = int(self.frames.class_indices[self.clips["positions"].iat[index][0]])
        clip["index"] = int(index)
        clip["frames"] = torch.as_tensor(kept)
        return clip
