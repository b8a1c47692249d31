"""Ensembles at the score level: several checkpoints (different models, seeds or prompt sets) with
the same class ids; a frame's class probabilities are the weighted mean of the members'.

`Ensemble` stands where a `Classifier` does in `score_images`, `predict_csv` (test.py) and
`evaluate_checkpoint`: its "logits" are the log of the mean probabilities, so the predictions
CSV, the top-k and every metric are the ensemble's. Members sharing an input pipeline (image
size, normalisation, per-frame inputs) score the same decoded batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from clipmg.errors import CheckpointError, DataError
from clipmg.inference.classifier import DEFAULT_CHECKPOINT, Classifier


@dataclass
class Ensemble:
    members: list[Classifier]
    weights: list[float]  # normalised to sum 1

    @classmethod
    def from_checkpoints(cls, checkpoints: Sequence[str | os.PathLike], weights: Sequence[float] | None = None,
                         device: str = "auto", labels=None, prompts=None, tta: str = "none") -> Ensemble:
        """`prompts`: one prompt set for every member, or a list of one per checkpoint (the same
        checkpoint may be given twice with two prompt sets)."""
        prompt_list = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts] * len(checkpoints)
        if len(prompt_list) == 1:
            prompt_list *= len(checkpoints)
        if len(prompt_list) != len(checkpoints):
            raise DataError(f"--prompts: give one prompt set, or one per checkpoint ({len(checkpoints)}); "
                            f"got {len(prompt_list)}")
        members = [Classifier.from_checkpoint(c, device=device, labels=labels, prompts=p, tta=tta)
                   for c, p in zip(checkpoints, prompt_list)]
        return cls.of(members, weights)

    @classmethod
    def of(cls, members: Sequence[Classifier], weights: Sequence[float] | None = None) -> Ensemble:
        if not members:
            raise DataError("an ensemble needs at least one checkpoint")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members):
            raise DataError(f"--weights: {len(weights)} weights for {len(members)} checkpoints")
        if any(not w >= 0 for w in weights) or sum(weights) <= 0:
            raise DataError(f"--weights must be 0 or more and not all 0, got {weights}")
        first = members[0]
        for member in members[1:]:
            if member.class_ids != first.class_ids:
                only_a = sorted(set(first.class_ids) - set(member.class_ids))
                only_b = sorted(set(member.class_ids) - set(first.class_ids))
                raise CheckpointError(
                    f"checkpoints {first.description} and {member.description} do not classify the same classes "
                    f"(only the first has {only_a or 'none'}, only the second {only_b or 'none'}): an ensemble "
                    "averages the probabilities of one set of class ids")
        total = sum(weights)
        return cls(list(members), [w / total for w in weights])

    # --- what readers of a Classifier use ---------------------------------------------------------

    @property
    def first(self) -> Classifier:
        return self.members[0]

    class_ids = property(lambda self: self.first.class_ids)
    class_names = property(lambda self: self.first.class_names)
    label_table = property(lambda self: self.first.label_table)
    num_classes = property(lambda self: self.first.num_classes)
    config = property(lambda self: self.first.config)
    record = property(lambda self: self.first.record)
    device = property(lambda self: self.first.device)
    checkpoint = property(lambda self: self.first.checkpoint)
    tta = property(lambda self: self.first.tta)
    # an ensemble scores frames; its clips are the mean of their frames' scores, even when a
    # member is a clip model (each frame then is a clip of one frame for it)
    clip_frames = None
    reads_whole_clip = False

    @property
    def description(self) -> str:
        weights = "" if len(set(self.weights)) == 1 else " with weights " + ", ".join(f"{w:.3g}" for w in self.weights)
        return f"ensemble of {', '.join(m.description for m in self.members)}{weights}"

    def transform(self):
        return None  # each group of members decodes with its own (see `groups`)

    def groups(self) -> list[list[tuple[Classifier, float]]]:
        """Members (with their weights) that share one input pipeline, in order of first member."""
        grouped: dict[str, list[tuple[Classifier, float]]] = {}
        for member, weight in zip(self.members, self.weights):
            key = repr((sorted(member.preprocess.items()), member.model.extra_inputs,
                        sorted(member.model.input_settings.items())))
            grouped.setdefault(key, []).append((member, weight))
        return list(grouped.values())

    @staticmethod
    def probabilities(group: list[tuple[Classifier, float]], images: torch.Tensor, **extras) -> torch.Tensor:
        """Sum of weight * class probabilities of a group's members on one batch."""
        return sum(weight * torch.softmax(member.logits(images, **extras), dim=1) for member, weight in group)

    @staticmethod
    def log(probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


def load_classifier(checkpoint: str | os.PathLike | Sequence[str | os.PathLike] = DEFAULT_CHECKPOINT,
                    weights: Sequence[float] | None = None, device: str = "auto", labels=None, prompts=None,
                    tta: str = "none") -> Classifier | Ensemble:
    """One checkpoint's `Classifier`, or the `Ensemble` of several (or of one with weights)."""
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    several_prompts = isinstance(prompts, (list, tuple)) and len(prompts) > 1
    if len(checkpoints) == 1 and weights is None and not several_prompts:
        single = prompts[0] if isinstance(prompts, (list, tuple)) else prompts
        return Classifier.from_checkpoint(checkpoints[0], device=device, labels=labels, prompts=single, tta=tta)
    return Ensemble.from_checkpoints(checkpoints, weights, device=device, labels=labels, prompts=prompts, tta=tta)


def output_name(classifier: Classifier | Ensemble) -> str:
    """A name for results of this classifier: the checkpoint folder's, `ensemble-of-N`, and the
    test-time augmentation, so that results of several settings do not overwrite each other."""
    if isinstance(classifier, Ensemble):
        name = f"ensemble-of-{len(classifier.members)}"
    else:
        name = Path(classifier.checkpoint).name if classifier.checkpoint else "model"
    return name if classifier.tta == "none" else f"{name}-tta-{classifier.tta}"
