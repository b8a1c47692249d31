"""The training recipe: learning rates from each tower's state, and the warm-up.

`--lr-image`, `--lr-text` and `--lr-heads` default to `auto`: a tower whose weights are random
trains at from-scratch rates, a tower loaded with pretrained weights at fine-tuning rates for
the kind of weights it holds, and the heads (projections, temperature, a linear class head, pose
fusion layers) at their own rate. An explicit number always wins. docs/recipes.md says where
each figure comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipmg.models.base import (
    CLIP_WEIGHTS,
    IMAGE,
    IMAGENET_WEIGHTS,
    LANGUAGE_MODEL_WEIGHTS,
    RANDOM,
    TEXT,
)

AUTO = "auto"
CHECKPOINT_WEIGHTS = "checkpoint"  # towers of a clipmg checkpoint being fine-tuned (--init-from)

#: tower learning rates by where the tower's weights came from
TOWER_RATES = {
    (IMAGE, RANDOM): 2e-3,
    (TEXT, RANDOM): 2e-4,  # 1e-3 collapsed the class embeddings to one point (tests/test_collapse.py)
    (IMAGE, CLIP_WEIGHTS): 1e-5,
    (TEXT, CLIP_WEIGHTS): 1e-5,
    (IMAGE, IMAGENET_WEIGHTS): 1e-4,
    (TEXT, LANGUAGE_MODEL_WEIGHTS): 1e-5,
    (IMAGE, CHECKPOINT_WEIGHTS): 1e-4,
    (TEXT, CHECKPOINT_WEIGHTS): 1e-4,
}
HEADS_RATE_FROM_SCRATCH = 2e-4  # every tower random: faster heads pulled the features together
HEADS_RATE_FINE_TUNING = 1e-3  # heads over pretrained features
LORA_RATE = 1e-3  # LoRA adapters start at zero and carry the whole update of their tower
DESCRIPTIONS = {RANDOM: "random weights, from-scratch rate", CLIP_WEIGHTS: "CLIP weights, fine-tuning rate",
                IMAGENET_WEIGHTS: "ImageNet weights, fine-tuning rate",
                LANGUAGE_MODEL_WEIGHTS: "pretrained language model, fine-tuning rate",
                CHECKPOINT_WEIGHTS: "weights of the --init-from checkpoint, fine-tuning rate"}


@dataclass
class LearningRates:
    image: float
    text: float
    heads: float
    why: dict[str, str]  # part -> where its rate comes from

    def as_config(self) -> dict[str, float]:
        return {"lr_image": self.image, "lr_text": self.text, "lr_heads": self.heads}

    def describe(self) -> str:
        return ", ".join(f"{part} {getattr(self, part):g} ({self.why[part]})" for part in (IMAGE, TEXT, "heads"))


def resolve_learning_rates(lr_image, lr_text, lr_heads, tower_origins: dict[str, str],
                           from_checkpoint: bool = False, lora: bool = False) -> LearningRates:
    """Each `auto` rate from the origin of its tower (`ContrastiveModel.tower_origins`; every
    tower counts as a checkpoint's with `from_checkpoint`; with `lora` the towers train only their
    adapters, at LORA_RATE); numbers are kept."""
    origins = {part: CHECKPOINT_WEIGHTS if from_checkpoint else tower_origins.get(part, RANDOM)
               for part in (IMAGE, TEXT)}
    given = {IMAGE: lr_image, TEXT: lr_text}
    rates, why = {}, {}
    for part in (IMAGE, TEXT):
        if given[part] == AUTO and lora:
            rates[part], why[part] = LORA_RATE, "auto: LoRA adapters"
        elif given[part] == AUTO:
            rates[part] = TOWER_RATES[(part, origins[part])]
            why[part] = f"auto: {DESCRIPTIONS[origins[part]]}"
        else:
            rates[part], why[part] = float(given[part]), "given"
    if lr_heads == AUTO:
        scratch = all(origin == RANDOM for part, origin in origins.items() if part in tower_origins)
        rates["heads"] = HEADS_RATE_FROM_SCRATCH if scratch else HEADS_RATE_FINE_TUNING
        why["heads"] = "auto: " + ("towers from scratch" if scratch else "over pretrained towers")
    else:
        rates["heads"], why["heads"] = float(lr_heads), "given"
    return LearningRates(rates[IMAGE], rates[TEXT], rates["heads"], why)


DEFAULT_WARMUP = 0.05  # a share of the run's optimizer steps


def warmup_steps(warmup: float, total_steps: int) -> int:
    """Warm-up steps: `warmup` below 1 is a share of the run's optimizer steps, 1 or more a number
    of steps; at most half the run."""
    steps = math.ceil(warmup * total_steps) if warmup < 1 else int(warmup)
    return max(0, min(steps, total_steps // 2))


NOT_LEARNING_EPOCHS = 3
NOT_LEARNING_FACTOR = 1.5  # balanced accuracy at most this many times chance counts as chance


def not_learning_warning(history: list[dict], val_classes: int, rates: LearningRates) -> str | None:
    """A warning when validation balanced accuracy has stayed near chance (1 / classes present)
    for the first NOT_LEARNING_EPOCHS epochs; None otherwise (and after that point)."""
    if len(history) != NOT_LEARNING_EPOCHS or val_classes < 2:
        return None
    chance = 1.0 / val_classes
    best = max(entry.get("val_balanced_accuracy", 0.0) for entry in history)
    if best > NOT_LEARNING_FACTOR * chance:
        return None
    return (f"the model is not learning: validation balanced accuracy is at most {best:.3f} after {len(history)} "
            f"epochs, chance is {chance:.3f}. Learning rates in use: {rates.describe()}. Try: check the labels "
            "and images with `clipmg check`; if a tower is pretrained, its fine-tuning rate may be too low "
            "(raise --lr-image / --lr-text); from scratch, text and head rates too high collapse the features to one "
            "point (lower --lr-text and --lr-heads, docs/recipes.md); more epochs; a larger --image-size when the "
            "gestures are small in the frame; a pretrained image tower when there are few people or sessions.")


PRETRAINED_ALTERNATIVE = ("--model openclip:ViT-B-32 --pretrained openai (downloads CLIP weights once), or "
                          "--pretrained /path/to/open_clip_weights.pt offline")


def random_start_notice(tower_origins: dict[str, str], from_checkpoint: bool) -> str | None:
    """What a run from random image weights should say first: where it starts and what a user
    with a network (or a weights file) would start from instead."""
    if from_checkpoint or tower_origins.get(IMAGE, RANDOM) != RANDOM:
        return None
    towers = "both towers" if tower_origins.get(TEXT, RANDOM) == RANDOM else "the image tower"
    return (f"starting from random weights ({towers}): fine for the demo and offline machines; on real data "
            f"a pretrained CLIP learns far more from few people: {PRETRAINED_ALTERNATIVE}")
