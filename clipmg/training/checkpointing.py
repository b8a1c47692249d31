"""Gradient checkpointing (`--grad-checkpointing`): the towers recompute their blocks'
activations in the backward pass instead of keeping them, trading compute for memory (open_clip's
`set_grad_checkpointing`, timm's, Hugging Face's `gradient_checkpointing_enable`). The gradients
are those of training without it."""

from __future__ import annotations

from clipmg.utils import logger


def enable_grad_checkpointing(model) -> None:
    """Turn it on for every tower of `model`; ModelError for a model that has none."""
    model.set_grad_checkpointing(True)
    logger.info("gradient checkpointing on for %s", model.model_config.get("name", type(model).__name__))
