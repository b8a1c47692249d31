"""The model a run trains: the one the model settings name (`cfg.network.spec`, built by the
backend that accepts the name), or the `--init-from` checkpoint, wrapped as they ask (head, pose
fusion, hand crops, clip model), with a zero-shot head, frozen towers, gradient checkpointing and
LoRA adapters when asked."""

from __future__ import annotations

import torch

from clipmg.checkpoint import CheckpointRecord, load_checkpoint_folder, resolve_checkpoint
from clipmg.errors import DataError
from clipmg.models import compose_model, create_model_from_spec
from clipmg.prompts import PromptSet, build_class_embeddings, load_prompt_set
from clipmg.training.checkpointing import enable_grad_checkpointing
from clipmg.training.config import BACKEND_SETTINGS, TrainConfig
from clipmg.training.lora import apply_lora
from clipmg.training.spread import spread_class_prompts
from clipmg.utils import logger


def build_model(cfg: TrainConfig, class_ids: list[int], class_names: list[str],
                device: torch.device | str = "cpu"):
    """The run's model, on `device` (where a random text tower's class prompts are spread)."""
    num_classes, settings = len(class_ids), cfg.network
    prompt_set = load_prompt_set(cfg.text.prompts) if cfg.text.prompts else PromptSet()
    if settings.init_from:
        folder = resolve_checkpoint(settings.init_from)
        source, record = load_checkpoint_folder(folder)
        logger.info("fine-tuning from %s (%s)", settings.init_from, record.model.get("name", ""))
        refuse_settings_the_checkpoint_overrides(cfg, record, source)
        if not cfg.text.prompts:
            prompt_set = PromptSet.from_dict(record.prompts or {}, folder)
        model = compose_model(source, **settings.wrap_spec(num_classes).options(), source=str(settings.init_from))
    else:
        model = create_model_from_spec(settings.spec(num_classes)).to(device)
        if cfg.text.spread_prompts:
            log_spread(spread_class_prompts(model, class_names, prompt_set, class_ids))
    if settings.init_head == "zeroshot":
        init_zero_shot_head(model, class_ids, class_names, prompt_set)
    if settings.freeze_image or settings.freeze_text:
        model.freeze(image=settings.freeze_image, text=settings.freeze_text)
    if cfg.tuning.grad_checkpointing:
        enable_grad_checkpointing(model)
    if cfg.tuning.lora_rank:
        apply_lora(model, cfg.tuning.lora_rank, cfg.tuning.lora_alpha, cfg.tuning.lora_targets)
    return model.to(device)


def log_spread(spread: dict | None) -> None:
    if spread:
        logger.info("random text tower: class prompts spread apart in %d text-only steps (closest pair's "
                    "cosine %.2f -> %.2f)", spread["steps"], spread["before"], spread["after"])


def init_zero_shot_head(model, class_ids: list[int], class_names: list[str], prompt_set: PromptSet) -> None:
    """Start a linear head over a contrastive tower at its class prompt embeddings (the checkpoint's
    prompt set unless --prompts says otherwise)."""
    tower = model.backbone
    embeddings = build_class_embeddings(tower, class_names, prompt_set, class_ids=class_ids)
    model.init_zero_shot_head(embeddings, tower.scale().detach())


def refuse_settings_the_checkpoint_overrides(cfg: TrainConfig, record: CheckpointRecord, source) -> None:
    """With --init-from the model is the checkpoint's: a backend setting given with another value
    than the checkpoint's (`--image-size 64` on a 96 px checkpoint) would be ignored, so it is an
    error. A value the checkpoint has (its run's settings, its model's name and input size) is
    accepted, so a run's settings can be passed on to its fine-tuning."""
    conflicts = []
    for name in cfg.given(*BACKEND_SETTINGS):
        value = getattr(cfg.network, name)
        accepted = {_hashable(record.train.get(name))}
        if name == "model":
            accepted |= _model_names(record.model)
        if name == "image_size":
            accepted.add(source.preprocess_config.get("image_size"))
        if _hashable(value) not in accepted:
            has = sorted(str(a) for a in accepted if a is not None)
            conflicts.append(f"{name}={value!r}" + (f" (the checkpoint's: {' or '.join(has)})" if has else ""))
    if conflicts:
        raise DataError(f"config: --init-from {cfg.network.init_from} fine-tunes the checkpoint's model, so "
                        f"{', '.join(conflicts)} would be ignored: drop {'it' if len(conflicts) == 1 else 'them'}, "
                        "or train a new model without --init-from")


def _model_names(model_config: dict) -> set[str]:
    """Every model name in a model_config and the configs it wraps (`name`, `backbone`)."""
    names = {model_config.get(key) for key in ("name", "backbone")} - {None}
    for value in model_config.values():
        if isinstance(value, dict):
            names |= _model_names(value)
    return {str(name) for name in names}


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value
