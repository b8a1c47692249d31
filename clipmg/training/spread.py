"""Class prompts that start apart.

A random text tower maps prompts one token apart ("letter A", "letter B") to nearly one point, so
every frame starts with nearly the same target and the contrastive loss has little to pull on.
Before training, a few text-only steps teach the text tower to tell the class embeddings apart
(an identity classification of the classes' own prompts), after which the image tower trains
against targets that already differ. Towers with pretrained or fine-tuned weights are left as
they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipmg.models.base import RANDOM, TEXT
from clipmg.prompts import PromptSet, encode_class_prompts

SPREAD_STEPS = 100
SPREAD_RATE = 1e-3
SPREAD_SCALE = 10.0  # logit scale of the identity classification
SPREAD_TARGET = 0.1  # done once no two class embeddings are closer than this cosine


def spread_class_prompts(model, class_names: list[str], prompt_set: PromptSet, class_ids: list[int] | None = None,
                         steps: int = SPREAD_STEPS, lr: float = SPREAD_RATE) -> dict | None:
    """Train a random text tower, alone, until no two class embeddings (the mean of each class's
    template embeddings) are closer than `SPREAD_TARGET`, or for `steps` steps. Returns the
    largest cosine between two classes before and after and the steps taken; None (nothing done)
    for a text tower that is not random, a model with its own class head, or one class."""
    if model.has_classifier_head or model.tower_origins.get(TEXT) != RANDOM or len(class_names) < 2:
        return None
    params = [p for name, p in model.named_parameters() if model.parameter_part(name) == TEXT and p.requires_grad]
    if not params:
        return None

    def closest_pair(embeddings: torch.Tensor) -> float:
        return float((embeddings @ embeddings.T).detach().fill_diagonal_(-1).max())

    was_training = model.training
    model.train()
    optimizer = torch.optim.Adam(params, lr=lr, fused=params[0].device.type in ("cpu", "cuda") or None)
    target = torch.arange(len(class_names), device=params[0].device)
    embeddings = encode_class_prompts(model, class_names, prompt_set, class_ids)
    before, taken = closest_pair(embeddings), 0
    while taken < steps and closest_pair(embeddings) >= SPREAD_TARGET:
        loss = F.cross_entropy(SPREAD_SCALE * embeddings @ embeddings.T, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        taken += 1
        embeddings = encode_class_prompts(model, class_names, prompt_set, class_ids)
    model.train(was_training)
    return {"before": before, "after": closest_pair(embeddings), "steps": taken}
