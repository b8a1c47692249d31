"""Image backbones for small frames, registered with timm (so `timm:<name>` and open_clip's
`timm_model_name` find them).

A standard ResNet stem (7x7 stride 2, then a 3x3 max-pool) divides a frame by 32 before its last
stage: a 64 px frame ends as a 2x2 map. `clipmg_resnet_small` drops the max-pool (a 64 px frame
ends as 4x4), keeps one basic block per stage and halves the widths, which spends its compute
where small, few-person data still benefit from it. `clipmg_resnet10_half` (the default's image
tower) keeps the stem's max-pool and one basic block a stage at half ResNet-18's widths, 32-256;
`clipmg_resnet18_half` is the same with ResNet-18's two blocks a stage, for more compute. All
batch-normalise their pooled features. docs/recipes.md has the measurements.
"""

from __future__ import annotations

import torch
from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

#: timm's pretrained_cfg of these towers, less the input and pool sizes (`_small_frame_resnet`)
SMALL_FRAME_CFG = {"num_classes": 0, "crop_pct": 1.0, "interpolation": "bicubic",
                   "mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
                   "first_conv": "conv1", "classifier": "fc"}


class SmallFrameResNet(ResNet):
    """A timm ResNet whose pooled features are batch-normalised, without the stem's max-pool
    unless `stem_pool`.

    The pooled features of a random ResNet are all positive and nearly parallel, so every frame
    starts at one point of the embedding space; centring them per channel (running statistics at
    evaluation) spreads the frames out in training from the first step (tests/test_collapse.py).
    """

    def __init__(self, stem_pool: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not stem_pool:
            self.maxpool = nn.Identity()
        self.head_norm = nn.BatchNorm1d(self.num_features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if x.ndim == 2:
            x = self.head_norm(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)


def _small_frame_resnet(name: str, pretrained: bool, input_size: int = 64, **kwargs) -> SmallFrameResNet:
    side = input_size // (32 if kwargs.get("stem_pool") else 16)  # the last stage's map
    default_cfg = {**SMALL_FRAME_CFG, "input_size": (3, input_size, input_size), "pool_size": (side, side)}
    pretrained_cfg = kwargs.pop("pretrained_cfg", None) or default_cfg
    return build_model_with_cfg(SmallFrameResNet, name, pretrained, pretrained_cfg=pretrained_cfg, **kwargs)


@register_model
def clipmg_resnet_small(pretrained: bool = False, **kwargs) -> SmallFrameResNet:
    """One basic block per stage, widths 32-256, no stem max-pool (trained from scratch only)."""
    args = {"block": BasicBlock, "layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256), "stem_width": 32}
    return _small_frame_resnet("clipmg_resnet_small", pretrained, **{**args, **kwargs})


@register_model
def clipmg_resnet18_half(pretrained: bool = False, **kwargs) -> SmallFrameResNet:
    """ResNet-18's two basic blocks a stage and stem max-pool at half its widths, 32-256 (trained
    from scratch only)."""
    args = {"block": BasicBlock, "layers": (2, 2, 2, 2), "channels": (32, 64, 128, 256), "stem_width": 32,
            "stem_pool": True}
    return _small_frame_resnet("clipmg_resnet18_half", pretrained, input_size=96, **{**args, **kwargs})


@register_model
def clipmg_resnet10_half(pretrained: bool = False, **kwargs) -> SmallFrameResNet:
    """One basic block a stage and the stem's max-pool, widths 32-256 (trained from scratch only)."""
    args = {"block": BasicBlock, "layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256), "stem_width": 32,
            "stem_pool": True}
    return _small_frame_resnet("clipmg_resnet10_half", pretrained, input_size=96, **{**args, **kwargs})
