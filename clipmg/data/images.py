"""Loading one image as an (H, W, 3) uint8 RGB array, whatever the file holds."""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipmg.errors import ImageError

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_image(path: str | os.PathLike, max_size: int | None = None) -> np.ndarray:
    """Read an image file into an (H, W, 3) uint8 RGB array.

    Handles JPEG, PNG, WebP, BMP, GIF and TIFF, whatever the extension says; applies EXIF
    orientation; puts transparent images on white; converts grayscale, palette and CMYK to
    RGB; scales 16-bit images to 8 bits. `max_size` is the shorter side the caller will
    resize to (as in albumentations' SmallestMaxSize): JPEGs are then decoded at the smallest
    1/2, 1/4 or 1/8 scale whose shorter side is still at least `max_size`, so that fewer
    pixels are decoded; the result is not resized any further. A missing, truncated or corrupt
    file raises ImageError naming it.
    """
    try:
        with Image.open(path) as image:
            if max_size and image.format == "JPEG":
                image.draft("RGB", _draft_request(image.size, max_size))
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb_array(image)
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image file (or an unsupported format): {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot decode image {path}: {error}") from error


def _draft_request(size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """The draft size whose shorter side is `max_size`, keeping the aspect ratio.

    `Image.draft` picks the largest reduction that keeps both sides at least this big.
    """
    width, height = size
    ratio = max_size / min(width, height)
    return max(1, int(width * ratio)), max(1, int(height * ratio))


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    image.load()  # decode now so that a truncated file fails here, naming the file
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _gray16_to_rgb(np.asarray(image))
    if mode == "F":
        return _float_to_rgb(np.asarray(image))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        return np.asarray(_on_white(image))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _gray16_to_rgb(values: np.ndarray) -> np.ndarray:
    """16-bit gray (0..65535) to 8 bits by rounding value * 255 / 65535."""
    values = np.clip(values.astype(np.int64), 0, 65535)
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _float_to_rgb(values: np.ndarray) -> np.ndarray:
    """Float images: 0..1 when they fit, else taken as 0..255."""
    values = np.nan_to_num(values.astype(np.float32))
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def verify_image(path: str | os.PathLike, decode: bool = True) -> str | None:
    """None when the image is usable, else the reason it is not.

    With `decode`, the whole file is decoded (JPEGs at 1/8 scale, which still reads every
    byte of the stream, so truncation is caught); without, only the header is read.
    """
    try:
        if decode:
            load_image(path, max_size=1)
        else:
            with Image.open(path):
                pass
    except (ImageError, OSError, ValueError, SyntaxError) as error:
        return str(error)
    return None


#: the widest aspect a cached frame keeps, and the training crops' widest (transforms.TRAIN_CROP_RATIO)
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
