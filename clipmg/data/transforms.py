"""Image transforms (albumentations): uint8 (H, W, 3) array in, float32 tensor (3, S, S) out
(or, with `normalize=False`, a uint8 tensor that `normalize_images` finishes per batch on
the device: four times less to copy, and one batched operation instead of one per image).

Evaluation matches CLIP / open_clip preprocessing: resize the shorter side to S, center
crop S x S, normalise. Training takes random crops of 60-100% of the central part of the
frame, jitters colours, rotates a little and optionally flips.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from clipmg.data.images import MAX_ASPECT, fit_frame
from clipmg.utils import logger

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TRAIN_CROP_SCALE = (0.6, 1.0)
TRAIN_CROP_RATIO = (1 / MAX_ASPECT, MAX_ASPECT)  # 0.8-1.25, the shapes the frame cache keeps
MAX_ROTATION_DEGREES = 10
PIPELINE_STREAM = 0x5EED  # keeps the per-step seeds apart from other streams drawn from the same seed
#: a model's `preprocess_config["interpolation"]` -> the OpenCV flag used to enlarge images; shrinking
#: always averages (INTER_AREA), as the antialiased resizes of CLIP and timm do
INTERPOLATIONS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST,
                  "lanczos": cv2.INTER_LANCZOS4}


class ImageTransform:
    """A picklable callable around an albumentations pipeline.

    `decode_size` is the shorter side the input needs for full quality; pass it to
    `load_image(path, max_size=...)` to decode large JPEGs faster.
    """

    def __init__(self, pipeline: A.Compose, image_size: tuple[int, int], decode_size: int,
                 normalize: bool = True, hflip: bool = False):
        self.pipeline = pipeline
        self.image_size = image_size
        self.decode_size = decode_size
        self.normalize = normalize
        self.hflip = hflip  # whether the pipeline flips images by itself

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        image = self.pipeline(image=image)["image"]
        if self.normalize:
            return image
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def set_random_seed(self, seed: int | None) -> None:
        """Seed the pipeline's draws: one stream that its steps draw from in turn.

        albumentations' `Compose.set_random_seed` hands every step a generator of the same seed,
        so their draws would move together (crop scale with rotation angle with jitter; Affine
        and ColorJitter always applied together). Two generators shared by every step are also
        cheaper than two per step: this runs for every training frame.
        """
        if seed is None:
            self.pipeline.set_random_seed(None)
            return
        generator = np.random.default_rng([PIPELINE_STREAM, int(seed) % 2**63])
        py_random = random.Random(int(generator.integers(2**63)))
        for step in (self.pipeline, *self.pipeline.transforms):
            step.seed, step.random_generator, step.py_random = seed, generator, py_random

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, pipeline={self.pipeline})"


class FitFrame(A.ImageOnlyTransform):
    """`fit_frame`: crop the long side to `max_aspect`, then shrink (never enlarge) to a shorter
    side of `size`, averaging pixels; what the frame cache stores, so a frame reaches the random
    crop alike with and without the cache.

    RandomResizedCrop with near-square ratios cannot place a crop of 60-100% of the area on
    a 16:9 frame and silently falls back to one fixed center crop; the aspect crop keeps it
    random. The crop then enlarges or shrinks by less than 1.5x, where the model's interpolation
    needs no averaging (INTER_AREA, several times slower, ran on every training frame).
    """

    def __init__(self, size: int, max_aspect: float = MAX_ASPECT, p: float = 1.0):
        super().__init__(p=p)
        self.size, self.max_aspect = size, max_aspect

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return fit_frame(img, self.size, self.max_aspect)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "max_aspect")


def create_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    train: bool = False,
    hflip: bool = False,
    normalize: bool = True,
    interpolation: str = "bicubic",
) -> ImageTransform:
    """The preprocessing for a model with input `image_size` (an int, or (height, width)).
    `interpolation` (bicubic, bilinear, nearest, lanczos) enlarges images smaller than the input.

    With `normalize=False` the output stays uint8 (3, S, S); pass batches of it through
    `normalize_images` with the same mean and std (equal to the normalised form up to float
    rounding).

    `hflip` adds random horizontal flips to a training transform, for images alone. Frames with
    per-frame inputs that are image positions (keypoints) must be flipped by the dataset instead
    (`FrameDataset(..., hflip=True)`), which mirrors those inputs with the image; it refuses a
    transform that flips on its own (the transform's `hflip` attribute says whether it does).
    """
    height, width = _size_pair(image_size)
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if interpolation not in INTERPOLATIONS:
        logger.warning("interpolation %r is not one of %s: enlarging with bicubic", interpolation,
                       ", ".join(INTERPOLATIONS))
    flag = INTERPOLATIONS.get(interpolation, cv2.INTER_CUBIC)
    decode_size = max(height, width)
    if train:
        decode_size = math.ceil(decode_size / math.sqrt(TRAIN_CROP_SCALE[0]))
    steps = _train_steps(height, width, decode_size, mean, hflip, flag) if train else _eval_steps(height, width, flag)
    if normalize:
        steps += [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]
    pipeline = A.Compose(steps)
    return ImageTransform(pipeline, (height, width), decode_size, normalize, hflip=bool(train and hflip))


def normalize_images(images: torch.Tensor, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                     std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    """uint8 (B, 3, H, W) pixels -> float32 normalised, channels-last (convolutions run
    faster on it, on the CPU and on GPUs' tensor cores; docs/benchmarks.md); float input is taken
    as already normalised and only changes layout. Clips (B, K, 3, H, W) are normalised frame by
    frame and keep their shape."""
    if images.ndim == 5:
        return normalize_images(images.flatten(0, 1), mean, std).unflatten(0, images.shape[:2])
    images = images.contiguous(memory_format=torch.channels_last)
    if images.dtype != torch.uint8:
        return images
    shape = (1, -1, 1, 1)
    scale = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape) * 255.0
    shift = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape) * 255.0
    return images.float().sub_(shift).div_(scale)


def transform_for_model(
    preprocess_config: Mapping, train: bool = False, hflip: bool = False, normalize: bool = True
) -> ImageTransform:
    """`create_transform` from a model's `preprocess_config` (`image_size`, `mean`, `std`,
    `interpolation`)."""
    return create_transform(
        preprocess_config["image_size"],
        preprocess_config.get("mean", OPENAI_CLIP_MEAN),
        preprocess_config.get("std", OPENAI_CLIP_STD),
        train=train,
        hflip=hflip,
        normalize=normalize,
        interpolation=preprocess_config.get("interpolation") or "bicubic",
    )


def _size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = (int(v) for v in image_size)
    return height, width


def _eval_steps(height: int, width: int, interpolation: int) -> list:
    return [
        A.SmallestMaxSize(
            max_size=max(height, width), interpolation=interpolation, area_for_downscale="image"
        ),
        A.CenterCrop(height=height, width=width),
    ]


def _train_steps(height: int, width: int, decode_size: int, mean: tuple[float, ...], hflip: bool,
                 interpolation: int) -> list:
    fill = tuple(round(m * 255) for m in mean)  # becomes 0 after normalisation
    steps = [
        FitFrame(decode_size),
        A.RandomResizedCrop(size=(height, width), scale=TRAIN_CROP_SCALE, ratio=TRAIN_CROP_RATIO,
                            interpolation=interpolation),
        A.Affine(
            rotate=(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES),
            translate_percent=(-0.05, 0.05),
            border_mode=cv2.BORDER_CONSTANT,
            fill=fill,
            p=0.5,
        ),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    return steps
