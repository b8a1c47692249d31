"""LoRA on the towers (`--lora-rank`, `--lora-targets`) through Hugging Face `peft`.

Low-rank adapters are put on layers of each tower that trains (`--freeze-image` / `--freeze-text`
towers get none); the towers' own weights are then frozen and only the adapters and the heads
(projections, logit scale, a linear class head) train. Checkpoints hold *merged* weights
(`W + scale * B @ A`, the model's own parameter names), so test.py and every reader load them as
any other checkpoint; training goes on with the unmerged model, and `trainer_state.pt` keeps the
adapters and the weights under them so that `--resume` continues exactly.

Targets (`--lora-targets`, comma-separated): `linear` (every `nn.Linear`), `attention` (every
`nn.MultiheadAttention`, the attention of open_clip's transformers, input and output projections),
`conv` (every `nn.Conv2d`), or module names (peft's rule: a module whose name ends with one, e.g.
`c_fc,c_proj` or `q_lin,v_lin`). Default `linear,attention`.
"""

from __future__ import annotations

import copy
import sys

import torch
from safetensors.torch import load_file
from torch import nn

from clipmg.checkpoint import load_weights
from clipmg.errors import CheckpointError, TrainingError
from clipmg.models.base import HEADS
from clipmg.utils import logger

DEFAULT_TARGETS = "linear,attention"
KINDS = {"linear": nn.Linear, "attention": nn.MultiheadAttention, "conv": nn.Conv2d}
ADAPTER_KEYS = ("lora_", ".base_layer.")


def _part(model, module_name: str) -> str:
    return model.parameter_part(f"{module_name}.weight")


def lora_target_names(model, targets: str | None, parts: set[str]) -> list[str]:
    """The full names of the modules of `model` that get adapters: those of the towers in `parts`
    matching `targets`. A Linear inside nn.MultiheadAttention is left to peft's attention layer
    (the attention does not call it as a module)."""
    wanted = [t.strip() for t in (targets or DEFAULT_TARGETS).split(",") if t.strip()]
    kinds = tuple(KINDS[t] for t in wanted if t in KINDS)
    suffixes = [t for t in wanted if t not in KINDS]
    attention = [name for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)]
    names = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{a}.") for a in attention):
            continue
        by_kind = isinstance(module, kinds) if kinds else False
        by_name = any(name == s or name.endswith(f".{s}") for s in suffixes)
        if (by_kind or by_name) and _part(model, name) in parts:
            names.append(name)
    return names


def apply_lora(model, rank: int, alpha: float | None = None, targets: str | None = None) -> list[str]:
    """Put rank-`rank` adapters (scale `alpha / rank`, `alpha` defaults to `rank`) on the trained
    towers of `model`, freeze the towers' own weights; returns the adapted module names."""
    from peft import LoraConfig, inject_adapter_in_model

    parts = {part for part in ("image", "text") if part not in model.frozen_parts}
    names = lora_target_names(model, targets, parts)
    found_parts = {_part(model, name) for name in names}
    missing = sorted(part for part in parts if part not in found_parts
                     and any(p.requires_grad for n, p in model.named_parameters() if model.parameter_part(n) == part))
    if missing:
        raise TrainingError(f"--lora-targets {targets or DEFAULT_TARGETS!r} matches no layer of the {', '.join(missing)} "
                            "tower; name its layers (e.g. c_fc,c_proj), add 'conv' for a convolutional tower, or "
                            f"freeze it (--freeze-{missing[0]})")
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=names,
                        lora_dropout=0.0)
    heads_training = {n for n, p in model.named_parameters() if p.requires_grad and model.parameter_part(n) == HEADS}
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name or name in heads_training)
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    logger.info("LoRA rank %d on %d layers (%d adapter parameters)", rank, len(names), adapters)
    return names


def has_lora(model: nn.Module) -> bool:
    # Adapters are peft's layers: while peft is not imported there are none, and every checkpoint
    # save of a run without LoRA would otherwise pay peft's large import.
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    return tuners is not None and any(isinstance(module, tuners.BaseTunerLayer) for module in model.modules())


def merged_copy(model: nn.Module) -> nn.Module:
    """`model` itself without adapters; else a copy with every adapter merged into the weights
    under it and removed (the model's own parameter names, as a checkpoint holds them)."""
    if not has_lora(model):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(model)
    layers = [name for name, module in merged.named_modules() if isinstance(module, BaseTunerLayer)]
    outermost = [name for name in layers if not any(name.startswith(f"{other}.") for other in layers)]
    for name in outermost:
        layer = merged.get_submodule(name)
        if hasattr(layer, "unload_and_optionally_merge_module"):  # peft's MultiheadAttention
            plain = layer.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)
        else:
            layer.merge()
            plain = layer.get_base_layer()
        parent, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent) if parent else merged, child, plain)
    return merged


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a merged checkpoint cannot give back: the adapters and the weights under them."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if any(key in k for key in ADAPTER_KEYS)}


def load_training_weights(model: nn.Module, weights_file, adapters: dict | None) -> None:
    """Weights of a run being resumed: a plain checkpoint's, or for a LoRA model the merged
    checkpoint's untouched weights plus the saved adapters and the weights under them."""
    if not has_lora(model):
        load_weights(model, weights_file)
        return
    if not adapters:
        raise CheckpointError(f"{weights_file} holds merged LoRA weights and its trainer_state.pt no adapters: "
                              "it cannot be resumed with LoRA; fine-tune from it (--init-from) instead")
    merged = load_file(str(weights_file))
    state = {key: adapters[key] if key in adapters else merged[key] for key in model.state_dict()}
    model.load_state_dict(state)
