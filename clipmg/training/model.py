"""The model a run trains: the one `cfg.model` names, or the `--init-from` checkpoint, wrapped as
the config asks (head, pose fusion, hand crops, clip model), with a zero-shot head, frozen
towers, gradient checkpointing and LoRA adapters when asked."""

from __future__ import annotations

from clipmg.checkpoint import load_checkpoint, resolve_checkpoint
from clipmg.models import compose_model, create_model
from clipmg.prompts import PromptSet, build_class_embeddings, load_prompt_set
from clipmg.training.checkpointing import enable_grad_checkpointing
from clipmg.training.config import TrainConfig
from clipmg.training.lora import apply_lora
from clipmg.utils import logger


def build_model(cfg: TrainConfig, class_ids: list[int], class_names: list[str]):
    num_classes = len(class_ids)
    prompt_set = load_prompt_set(cfg.prompts) if cfg.prompts else PromptSet()
    if cfg.init_from:
        source, config = load_checkpoint(cfg.init_from)
        logger.info("fine-tuning from %s (%s)", cfg.init_from, config["model"].get("name", ""))
        if not cfg.prompts:
            prompt_set = PromptSet.from_dict(config.get("prompts") or {}, resolve_checkpoint(cfg.init_from))
        model = compose_model(source, **cfg.wrapper_options(num_classes), source=str(cfg.init_from))
    else:
        model = create_model(cfg.model, **cfg.model_options(num_classes))
    if cfg.init_head == "zeroshot":
        init_zero_shot_head(model, class_ids, class_names, prompt_set)
    if cfg.freeze_image or cfg.freeze_text:
        model.freeze(image=cfg.freeze_image, text=cfg.freeze_text)
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(model)
    if cfg.lora_rank:
        apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    return model


def init_zero_shot_head(model, class_ids: list[int], class_names: list[str], prompt_set: PromptSet) -> None:
    """Start a linear head over a contrastive tower at its class prompt embeddings (the checkpoint's
    prompt set unless --prompts says otherwise)."""
    tower = model.backbone
    embeddings = build_class_embeddings(tower, class_names, prompt_set, class_ids=class_ids)
    model.init_zero_shot_head(embeddings, tower.scale().detach())
