"""AdamW over per-group learning rates (image tower, text tower, heads) and LR schedules; the
mixed-precision policy is `clipmg.utils.autocast_dtype` (re-exported here for the trainer)."""

from __future__ import annotations

import enum
import math

import torch

from clipmg.training.config import TrainConfig
from clipmg.training.layer_decay import apply_layer_decay
from clipmg.training.recipes import warmup_steps
from clipmg.utils import autocast_dtype

__all__ = ["SchedulerInterval", "adamw", "autocast_dtype", "build_optimizer", "build_scheduler", "cosine_with_warmup"]


class SchedulerInterval(enum.Enum):
    """When the trainer steps a schedule: after each optimizer step, or at the end of each epoch
    with the monitored validation value."""

    STEP = "step"
    EPOCH = "epoch"


def build_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = model.param_groups(lr_image=cfg.optim.lr_image, lr_text=cfg.optim.lr_text, lr_heads=cfg.optim.lr_heads,
                                weight_decay=cfg.optim.weight_decay)
    groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    if cfg.tuning.layer_decay != 1.0:
        groups = apply_layer_decay(model, groups, cfg.tuning.layer_decay)
    return adamw(groups)


def adamw(groups: list[dict]) -> torch.optim.AdamW:
    """AdamW over parameter groups, fused where every parameter allows it: one kernel for every
    parameter instead of a Python loop over them (the update of the text tower's token table
    alone outweighed a small image tower's; docs/recipes.md)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, fused=fused or None)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler, the SchedulerInterval it is stepped at), or (None, None) without one."""
    if cfg.optim.scheduler == "cosine":
        total = steps_per_epoch * cfg.optim.epochs
        return cosine_with_warmup(optimizer, warmup_steps(cfg.optim.warmup, total), total), SchedulerInterval.STEP
    if cfg.optim.scheduler == "plateau":
        mode = "min" if cfg.run.monitor == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5,
                                                          patience=cfg.optim.plateau_patience), SchedulerInterval.EPOCH
    return None, None
