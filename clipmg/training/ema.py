"""EMA weights (`--ema-decay`): timm's `ModelEmaV3` keeps an exponential moving average of the
model's parameters and buffers (BatchNorm statistics too), updated after each optimizer step.
The trainer validates it beside the raw weights each epoch and saves the better as `best/`; its
state rides in `trainer_state.pt`, so a resumed run goes on with the same average."""

from __future__ import annotations

import torch
from timm.utils import ModelEmaV3

from clipmg.errors import DataError


def create_ema(model: torch.nn.Module, decay: float | None) -> ModelEmaV3 | None:
    """An EMA copy of `model` (None when `decay` is None: EMA off). Its first update copies the
    weights (timm's warm start at step 1), later ones move `1 - decay` of the way to them."""
    if decay is None:
        return None
    if not 0.0 <= decay < 1.0:
        raise DataError(f"config: ema_decay must be in [0, 1), got {decay}")
    return NamedModelEma(model, decay=decay)


class NamedModelEma(ModelEmaV3):
    """timm's `ModelEmaV3` pairing each tensor of the average with the model's of the same name.

    timm pairs them by their order in `state_dict()`, and peft's LoRA attention (peft 0.22)
    registers its base weights again at every forward, which reorders them: the average of one
    tensor was then taken with another, or failed on their shapes.
    """

    def apply_update_(self, model: torch.nn.Module, decay: float) -> None:
        current = model.state_dict()
        averages, values = [], []
        for name, average in self.module.state_dict().items():
            value = current[name].to(device=average.device)
            if average.is_floating_point():
                averages.append(average)
                values.append(value)
            else:
                average.copy_(value)
        if averages:
            self._foreach_lerp_(averages, values, weight=1.0 - decay)


def update_ema(ema: ModelEmaV3 | None, model: torch.nn.Module, step: int) -> None:
    """After optimizer step `step` (counted from 1)."""
    if ema is not None:
        ema.update(model, step=step)
