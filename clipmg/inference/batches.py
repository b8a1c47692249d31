"""Images listed by path -> batches of model input, decoded in DataLoader workers.

`iter_image_batches` is the one image pipeline of predict, evaluate, embed, prompt experiments
and the linear probe: paths are looked up under a list of roots, decoded (JPEGs at reduced size
where the model input allows) and transformed in workers, and batched with the model's per-frame
extra inputs. A missing or unreadable image is an ImageError naming the file and its row, or,
when the caller skips them, a row of the batch's `bad` list.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clipmg import data as cdata
from clipmg.checkpoint import CheckpointRecord, as_record
from clipmg.errors import ImageError
from clipmg.utils import default_workers, threads_beside_workers

DEFAULT_BATCH_SIZE = 64
OK, MISSING, UNREADABLE = "ok", "missing", "unreadable"


# ------------------------------------------------------------------------------ where images are
def resolve_image_path(path: str, roots: Sequence[Path]) -> Path | None:
    """The first existing file among `path` under each root (absolute paths as they are)."""
    path = path.strip()
    if not path:
        return None
    candidate = Path(path.replace("\\", "/"))
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for root in roots:
        full = root / candidate
        if full.is_file():
            return full
    return None


def trained_image_roots(config: CheckpointRecord | Mapping) -> list[Path]:
    """The image folder a checkpoint was trained on (from its record's `train` settings)."""
    train = as_record(config).train
    if train.get("image_root"):
        return [Path(train["image_root"])]
    if train.get("metadata"):
        return [Path(cdata.default_image_root(train["metadata"]))]
    return []


def image_roots(image_root: str | os.PathLike | None = None, *, metadata: str | os.PathLike | None = None,
                csv: Path | None = None, config: CheckpointRecord | Mapping | None = None) -> list[Path]:
    """Where relative image paths are looked for: `image_root` alone when given; else, in order,
    the default image root of `metadata`, or the folder of a `csv` of paths and `training/` in
    it; then the image folder the checkpoint (`config`) was trained on."""
    if image_root is not None:
        return [Path(image_root)]
    roots: list[Path] = []
    if metadata is not None:
        roots.append(Path(cdata.default_image_root(metadata)))
    if csv is not None:
        roots += [csv.parent, csv.parent / "training"]
    roots += trained_image_roots(config)
    return list(dict.fromkeys(roots))


# ---------------------------------------------------------------------------------- the dataset
class ImageListDataset(Dataset):
    """Image paths -> transformed images (and, with `thumb_size`, square thumbnails from the
    same decoded pixels), decoded in DataLoader workers.

    A missing or unreadable image is not an exception here (a worker's traceback would bury
    the message); the item carries its status and the caller decides to fail or skip.
    """

    def __init__(self, paths: Sequence[str], roots: Sequence[Path], transform,
                 extra_fields: Mapping[str, np.ndarray] | None = None, thumb_size: int | None = None):
        self.paths = paths
        self.roots = [Path(r) for r in roots]
        self.transform = transform
        self.extra_fields = dict(extra_fields or {})
        self.thumb_size = thumb_size
        self.decode_size = getattr(transform, "decode_size", None)  # JPEG draft-mode decoding
        if thumb_size and self.decode_size:
            self.decode_size = max(self.decode_size, thumb_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = resolve_image_path(str(self.paths[index]), self.roots)
        if path is None:
            return {"index": index, "status": MISSING, "image": None, "error": ""}
        try:
            pixels = cdata.load_image(path, max_size=self.decode_size)
            image = self.transform(pixels)
        except ImageError as error:
            return {"index": index, "status": UNREADABLE, "image": None, "error": str(error)}
        return {"index": index, "status": OK, "image": image, "error": "",
                "thumb": thumbnail(pixels, self.thumb_size) if self.thumb_size else None,
                "extras": {key: torch.as_tensor(values[index]) for key, values in self.extra_fields.items()}}


def thumbnail(pixels: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3) uint8 image as a `size` x `size` thumbnail: centre square, resized."""
    from PIL import Image

    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(pixels[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), Image.BILINEAR), dtype=np.uint8)


@dataclass
class ImageBatch:
    images: torch.Tensor | None  # (b, 3, S, S) uint8, None when no image of the batch could be read
    indices: torch.Tensor  # (b,) positions in the list of paths
    extras: dict[str, torch.Tensor]
    thumbs: np.ndarray | None  # (b, T, T, 3) uint8
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (position, status, message)
    size: int = 0  # rows of the list this batch covers, read or not


def collate_images(items: list[dict]) -> ImageBatch:
    good = [item for item in items if item["image"] is not None]
    extra_keys = list(good[0]["extras"]) if good else []
    thumbs = [item["thumb"] for item in good if item["thumb"] is not None]
    return ImageBatch(
        images=torch.stack([item["image"] for item in good]) if good else None,
        indices=torch.tensor([item["index"] for item in good], dtype=torch.long),
        extras={key: torch.stack([item["extras"][key] for item in good]) for key in extra_keys},
        thumbs=np.stack(thumbs) if thumbs else None,
        bad=[(item["index"], item["status"], item["error"]) for item in items if item["image"] is None],
        size=len(items))


def image_problem(status: str, path: str, row: int, source: str, roots: Sequence[Path], error: str,
                  column: str) -> str:
    where = f"{source} row {row}, column {column!r}"
    if status == MISSING and not path:
        return f"{where}: empty image path"
    if status == MISSING:
        looked = "" if Path(path).is_absolute() else " (looked under " + ", ".join(str(r) for r in roots) + ")"
        return f"image not found: {path} ({where}){looked}"
    return f"{error} ({where})"


def iter_image_batches(paths: Sequence[str], rows: Sequence[int], roots: Sequence[Path], transform, *,
                       device: torch.device, source: str, column: str = "Path",
                       extra_fields: Mapping[str, np.ndarray] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                       workers: int | None = None, skip_missing: bool = False, thumb_size: int | None = None,
                       then: str = "predict the other rows") -> Iterator[ImageBatch]:
    """Batches of the images at `paths` (row numbers `rows` of `source`, for messages).

    A missing or unreadable image raises ImageError naming the file and its row, unless
    `skip_missing`: then it is listed in its batch's `bad` with the message (`then` says what
    --skip-missing would do instead, in the error's hint).
    """
    workers = default_workers(device) if workers is None else workers
    workers = max(0, min(workers, -(-len(paths) // batch_size)))
    dataset = ImageListDataset(paths, roots, transform, extra_fields=extra_fields, thumb_size=thumb_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_images, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers else None,
                        generator=torch.Generator())  # leaves the global RNG (training's) alone
    with threads_beside_workers(device, workers):
        for batch in loader:
            named = []
            for index, state, error in batch.bad:
                message = image_problem(state, str(paths[index]), int(rows[index]), source, roots, error, column)
                if not skip_missing:
                    hint = "pass --image-root" if state == MISSING else "fix or remove the file"
                    raise ImageError(f"{message}; {hint}, or --skip-missing to {then}")
                named.append((index, state, message))
            batch.bad = named
            yield batch
