"""`Classifier`: a model and its class table, built once; images in, (B, C) logits out.

The class prompts are encoded once into a (C, D) table and images are scored as the model's
`class_logits` does, exactly as training-time validation does, so predict, evaluate, embed,
prompt experiments and validation report the same figures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clipmg import data as cdata
from clipmg.checkpoint import (
    CheckpointRecord,
    as_record,
    load_checkpoint_folder,
    resolve_checkpoint,
)
from clipmg.errors import DataError, ModelError
from clipmg.inference.tta import check_tta, tta_logits
from clipmg.models import create_model
from clipmg.prompts import PromptSet, build_class_embeddings, load_prompt_set
from clipmg.utils import autocast, autocast_dtype, logger, resolve_device

DEFAULT_CHECKPOINT = "checkpoints/best"


@dataclass
class Classifier:
    """A model and its class embeddings (built once): images in, (B, C) logits out."""

    model: torch.nn.Module
    class_ids: list[int]
    class_names: list[str]
    class_embeddings: torch.Tensor | None  # (C, D) normalised, float32, on the model's device;
    # None for a model with its own classifier head
    scale: torch.Tensor  # scalar float32 logit scale (exp already applied)
    preprocess: dict
    device: torch.device
    config: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    prompt_set: PromptSet = field(default_factory=PromptSet)
    tta: str = "none"  # test-time augmentation of `logits` (clipmg.inference.tta)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT, device: str = "auto",
                        labels: str | os.PathLike | Mapping[int, str] | None = None,
                        prompts: str | os.PathLike | None = None, tta: str = "none") -> Classifier:
        """Load a checkpoint; `labels` (Clip_label.csv) renames its classes, `prompts` replaces
        its prompt set, `tta` scores each frame as the mean of its views (none, flip, crops). The
        class ids always stay those the checkpoint was trained on."""
        check_tta(tta)
        device = resolve_device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu (or auto)")
        folder = resolve_checkpoint(checkpoint)  # once: everything below reads this folder
        model, record = load_checkpoint_folder(folder, device)
        class_ids = [int(i) for i in record.class_ids]
        names = class_names_for(class_ids, list(record.class_names), labels, folder)
        prompt_set = load_prompt_set(prompts) if prompts else PromptSet.from_dict(record.prompts or {}, folder)
        return cls.from_model(model, class_ids, names, prompt_set, preprocess=record.preprocess,
                              config=record.to_json_dict(), checkpoint=folder, tta=tta)

    @classmethod
    def zero_shot(cls, model: str, pretrained: str | None, labels, device: str = "auto") -> Classifier:
        """An open_clip model by name with `pretrained` weights (a tag or a file), scoring the
        classes of the label file `labels` with their bare names: nothing trained."""
        name = model if model.startswith(("openclip:", "hybrid")) else f"openclip:{model}"
        if not pretrained:
            logger.warning("%s without --pretrained has random weights: its zero-shot figures are chance", name)
        table = cdata.load_labels(labels)
        net = create_model(name, pretrained=pretrained).to(resolve_device(device))
        return cls.from_model(net, list(table), list(table.values()))

    @classmethod
    def from_model(cls, model, class_ids: Sequence[int], class_names: Sequence[str],
                   prompt_set: PromptSet | None = None, preprocess: Mapping | None = None,
                   config: dict | None = None, checkpoint: Path | None = None, tta: str = "none") -> Classifier:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            embeddings = None if model.has_classifier_head else build_class_embeddings(
                model, list(class_names), prompt_set, class_ids=list(class_ids)).float()
            scale = model.scale().detach().float()
        return cls(model=model, class_ids=list(class_ids), class_names=list(class_names),
                   class_embeddings=embeddings, scale=scale,
                   preprocess=dict(preprocess or model.preprocess_config), device=device,
                   config=config or {}, checkpoint=checkpoint, prompt_set=prompt_set or PromptSet(),
                   tta=check_tta(tta))

    @property
    def description(self) -> str:
        if self.checkpoint is not None:
            return str(self.checkpoint) + ("" if self.tta == "none" else f" (tta {self.tta})")
        cfg = getattr(self.model, "model_config", {})
        return f"{cfg.get('name')} (pretrained {cfg.get('pretrained')}, zero-shot)"

    @property
    def record(self) -> CheckpointRecord:
        """The checkpoint's config.json (`config`) as a record (an empty one for a zero-shot model)."""
        return as_record(self.config)

    @property
    def label_table(self) -> dict[int, str]:
        return dict(zip(self.class_ids, self.class_names))

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def autocast(self):
        """The precision policy's "auto" (`clipmg.utils.autocast_dtype`), as training uses it."""
        return autocast(autocast_dtype("auto", self.device), self.device)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """(B, C) float32 logits on the CPU for a batch of preprocessed images (and the per-frame
        `extras` the model takes, see `ContrastiveModel.extra_inputs`); with `tta`, the mean of
        the logits of each view of the batch."""
        if self.tta == "none":
            return self.logits_from_features(self.scoring_features(images, **extras))
        extras = {key: value.to(self.device, non_blocking=True) for key, value in extras.items()}
        return tta_logits(lambda view, **view_extras: self.logits_from_features(
            self.scoring_features(view, **view_extras)), self.prepare_images(images), extras, self.tta)

    @torch.inference_mode()
    def scoring_features(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """The model's `scoring_features` of a batch, float32 on the device."""
        images = self.prepare_images(images)
        extras = {key: value.to(self.device, non_blocking=True) for key, value in extras.items()}
        with self.autocast():
            return self.model.scoring_features(images, **extras).float()

    @torch.inference_mode()
    def logits_from_features(self, features: torch.Tensor, class_embeddings: torch.Tensor | None = None
                             ) -> torch.Tensor:
        """(B, C) float32 logits on the CPU against this classifier's class table, or another
        (C', D) one (a prompt set's)."""
        table = self.class_embeddings if class_embeddings is None else class_embeddings.to(self.device)
        with self.autocast():
            logits = self.model.logits_from_features(features.to(self.device), table)
        return logits.float().cpu()

    @property
    def clip_frames(self) -> int | None:
        """K for a clip model (`clipmg.models.ClipModel`), else None."""
        return getattr(self.model, "clip_frames", None)

    @property
    def reads_whole_clip(self) -> bool:
        """A clip model that classifies a clip from every frame of it (`ClipModel.reads_whole_clip`)."""
        return bool(getattr(self.model, "reads_whole_clip", False))

    @torch.inference_mode()
    def frame_features(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """A clip model's (N, D) per-frame features (what its temporal head pools), float32 on the device."""
        images = self.prepare_images(images)
        extras = {key: value.to(self.device, non_blocking=True) for key, value in extras.items()}
        with self.autocast():
            return self.model.frame_features(images, **extras).float()

    @torch.inference_mode()
    def clip_logits(self, frame_features: torch.Tensor) -> torch.Tensor:
        """A clip model's (B, C) float32 logits on the CPU of clips given as (B, K, D) frame features
        (K = 1: each frame a clip of its own, the per-frame predictions)."""
        with self.autocast():
            features = self.model.clip_features(frame_features.to(self.device)).float()
        return self.logits_from_features(features)

    def extra_fields(self, paths: Sequence[str], roots: Sequence[Path]) -> dict:
        """The per-frame inputs besides the image that the model takes, for these images."""
        return cdata.load_extra_fields(self.model.extra_inputs, paths, roots, self.model.input_settings)

    def transform(self):
        """Decoded pixels -> uint8 (3, S, S); `prepare_images` normalises whole batches."""
        return cdata.transform_for_model(self.preprocess, train=False, normalize=False)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch from `transform` (uint8) or already normalised (float) -> the model's
        normalised float input on the device."""
        images = images.to(self.device, non_blocking=True)
        return cdata.normalize_images(images, self.preprocess.get("mean", cdata.OPENAI_CLIP_MEAN),
                                      self.preprocess.get("std", cdata.OPENAI_CLIP_STD))


def class_names_for(class_ids: list[int], names: list[str], labels, checkpoint: Path) -> list[str]:
    """The checkpoint's class names, or those of a label file whose ids must be the same."""
    if labels is None:
        return names
    source = "the given labels" if isinstance(labels, Mapping) else str(labels)
    table = dict(labels) if isinstance(labels, Mapping) else cdata.load_labels(labels)
    table = {int(k): v for k, v in table.items()}
    if set(table) != set(class_ids):
        extra, lacking = sorted(set(table) - set(class_ids)), sorted(set(class_ids) - set(table))
        raise DataError(
            f"{source} does not fit checkpoint {checkpoint}: the checkpoint was trained on class ids "
            f"{id_range(class_ids)}; the label file " + "; ".join(
                part for part in (f"also has {extra}" if extra else "", f"lacks {lacking}" if lacking else "")
                if part) + ". Use the label file the checkpoint was trained with, or leave out --labels.")
    return [table[i] for i in class_ids]


def id_range(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    if ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 3:
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids))
