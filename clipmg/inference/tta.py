"""Test-time augmentation (`--tta`): a frame is scored as the mean of its views' logits.

- `none`: the frame alone (the default);
- `flip`: the frame and its mirror image (per-frame inputs that are image positions, such as
  keypoints, are mirrored with it, as training's `--hflip` does);
- `crops`: the frame and five crops of `CROP_SCALE` of its side (four corners and the centre),
  each resized back to the model's input size.

Views are made from the batch the model would score (already resized and normalised), so they
cost one forward pass each and no decoding. The `Classifier` (predict, evaluate, test.py) and
training-time validation score through `tta_logits`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from clipmg.data.extras import extra_field_mirror
from clipmg.errors import DataError, ModelError

TTA_MODES = ("none", "flip", "crops")
CROP_SCALE = 0.875

View = tuple[torch.Tensor, dict]


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise DataError(f"--tta {mode!r} is not one of {', '.join(TTA_MODES)}")
    return mode


def _mirror_extras(extras: dict) -> dict:
    mirrored = {}
    for name, values in extras.items():
        flipped = extra_field_mirror(name)(values.detach().cpu().numpy())
        mirrored[name] = torch.as_tensor(np.ascontiguousarray(flipped), dtype=values.dtype).to(values.device)
    return mirrored


def _crops(images: torch.Tensor) -> list[torch.Tensor]:
    height, width = images.shape[-2:]
    h, w = max(1, round(height * CROP_SCALE)), max(1, round(width * CROP_SCALE))
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w),
               ((height - h) // 2, (width - w) // 2)]
    return [F.interpolate(images[..., top:top + h, left:left + w], size=(height, width), mode="bilinear",
                          align_corners=False) for top, left in corners]


def tta_views(images: torch.Tensor, extras: dict, mode: str) -> list[View]:
    """The views of a (B, 3, H, W) batch under `mode`, the batch itself first."""
    check_tta(mode)
    views: list[View] = [(images, extras)]
    if mode == "flip":
        views.append((torch.flip(images, dims=[-1]), _mirror_extras(extras)))
    elif mode == "crops":
        if extras:
            raise ModelError(f"--tta crops: the model also takes {', '.join(extras)}, image positions that "
                             "crops would move; use --tta flip")
        views += [(crop, extras) for crop in _crops(images)]
    return views


def tta_logits(score: Callable[..., torch.Tensor], images: torch.Tensor, extras: dict | None = None,
               mode: str = "none") -> torch.Tensor:
    """The mean over the views of `score(view_images, **view_extras)` (logits)."""
    views = tta_views(images, dict(extras or {}), mode)
    total = None
    for view_images, view_extras in views:
        logits = score(view_images, **view_extras).float()
        total = logits if total is None else total + logits
    return total if len(views) == 1 else total / len(views)
