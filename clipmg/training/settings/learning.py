"""The sections of what is learned and how: text and prompts, loss, optimisation, fine-tuning tools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clipmg.errors import DataError
from clipmg.training.recipes import AUTO, DEFAULT_WARMUP
from clipmg.training.settings.base import Settings, at_least, setting

LEARNING_RATES = ("lr_image", "lr_text", "lr_heads")


@dataclass
class TextSettings(Settings):
    section: ClassVar[str] = "text"

    prompts: str | None = setting(None, "prompt set file or name (default: the built-in templates)")
    text_source: str = setting("caption", "texts of the frames: their captions, their class prompt, or a prompt "
                                          "template drawn at random")
    spread_prompts: bool = setting(True, "a random text tower first learns to tell the class prompts apart (a few "
                                         "text-only steps), so that names one token apart do not start at one point")


@dataclass
class LossSettings(Settings):
    section: ClassVar[str] = "loss"

    loss: str = setting("ce", "contrastive loss: label-aware cross-entropy, the original soft targets, or "
                              "Jensen-Shannon")
    contrast: str = setting("classes", "contrast each frame with one text per class, or with the batch's texts")
    logit_adjust_tau: float = setting(0.0, "logit adjustment against class imbalance: tau * log(class prior); 0 "
                                           "is off")
    balanced_sampler: str = setting("none", "draw training frames class-balanced: 1/count (inverse) or "
                                            "1/sqrt(count)")
    class_weighting: str = setting("none", "linear head: class-weighted cross-entropy (1/count or 1/sqrt(count))")
    focal_gamma: float = setting(0.0, "linear head: focal loss gamma (0: cross-entropy)")

    def check(self) -> None:
        if self.focal_gamma < 0:
            raise DataError(f"config: focal_gamma must be 0 or more, got {self.focal_gamma}")

    def unused_settings(self):
        if self.contrast == "batch":
            return iter([(("logit_adjust_tau",), "use --contrast classes",
                          "logit adjustment needs --contrast classes")])
        return iter(())


@dataclass
class OptimSettings(Settings):
    section: ClassVar[str] = "optimisation"

    epochs: int = setting(10, "passes over the training frames")
    # 32, not 64: on sets of a few hundred frames an epoch of 64 is a handful of steps (docs/recipes.md)
    batch_size: int = setting(32, "frames per optimizer step and device (a clip model: clips of K "
                                  "frames)")
    lr_image: float | str = setting(AUTO, "image tower learning rate, or auto: from its weights (random, CLIP, "
                                          "ImageNet, checkpoint)")
    lr_text: float | str = setting(AUTO, "text tower learning rate, or auto")
    lr_heads: float | str = setting(AUTO, "projection/class heads learning rate, or auto")
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and norms)")
    scheduler: str = setting("cosine", "learning-rate schedule: warm-up then cosine, halve on a plateau, or "
                                       "constant")
    warmup: float = setting(DEFAULT_WARMUP, "cosine warm-up: below 1 a share of the optimizer steps, 1 or more a number of "
                                  "steps")
    plateau_patience: int = setting(2, "plateau schedule: epochs without progress before the rates halve")
    grad_accum: int = setting(1, "batches accumulated per optimizer step")
    grad_clip: float | None = setting(1.0, "clip the gradient norm to this (none: no clipping)")
    precision: str = setting("auto", "mixed precision: auto is bf16 (fp16 without it) on CUDA and fp32 elsewhere")
    max_steps_per_epoch: int | None = setting(None, "stop each epoch after this many steps (smoke tests)")

    def check(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            at_least(name, getattr(self, name), 1)
        at_least("max_steps_per_epoch", self.max_steps_per_epoch, 1, optional=True)
        for name in LEARNING_RATES:
            value = getattr(self, name)
            if value != AUTO and not (isinstance(value, (int, float)) and value >= 0):
                raise DataError(f"config: {name} must be a number (0 or more) or 'auto', got {value!r}")
        if self.warmup < 0:
            raise DataError(f"config: warmup must be 0 or more, got {self.warmup}")

    def unused_settings(self):
        if self.scheduler != "plateau":
            return iter([(("plateau_patience",), "use --scheduler plateau", f"the scheduler is {self.scheduler}")])
        return iter(())


@dataclass
class TuningSettings(Settings):
    section: ClassVar[str] = "tuning"

    ema_decay: float | None = setting(None, "keep an EMA of the weights (e.g. 0.999), validated beside them; the "
                                            "better becomes best/")
    layer_decay: float = setting(1.0, "layer-wise learning-rate decay of the towers (e.g. 0.75); 1 is off")
    lora_rank: int = setting(0, "LoRA adapters of this rank on the trained towers (their weights frozen); 0 is off")
    lora_alpha: float | None = setting(None, "LoRA scale numerator (default: the rank)")
    lora_targets: str | None = setting(None, "LoRA layers: linear, attention, conv or module names, "
                                             "comma-separated (default linear,attention)")
    grad_checkpointing: bool = setting(False, "recompute the towers' activations in the backward pass (less "
                                              "memory, more compute)")
    tta: str = setting("none", "test-time augmentation of validation: a frame and its mirror image, or five crops")

    def check(self) -> None:
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise DataError(f"config: ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.layer_decay <= 1:
            raise DataError(f"config: layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.lora_rank < 0 or (self.lora_alpha is not None and self.lora_alpha <= 0):
            raise DataError(f"config: lora_rank must be 0 (off) or more and lora_alpha positive, got "
                            f"{self.lora_rank} and {self.lora_alpha}")

    def unused_settings(self):
        if not self.lora_rank:
            return iter([(("lora_alpha", "lora_targets"), "give --lora-rank", "LoRA is off (lora_rank 0)")])
        return iter(())
