"""Class text embeddings from a prompt set: open_clip's zero-shot classifier, for gestures.

A class's embedding is the normalised mean of its templates' normalised embeddings (prompt
ensembling); a learned set (CoOp) runs its context through the text tower instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipmg.prompts.learned import PromptLearner
from clipmg.prompts.sets import LearnedPromptSet, PromptSet


@torch.no_grad()
def build_class_embeddings(model, class_names: list[str], prompt_set: PromptSet | None = None,
                           class_ids: list[int] | None = None, batch_size: int = 256) -> torch.Tensor:
    """(C, D) normalised class embeddings: the mean of each class's normalised template embeddings."""
    prompt_set = prompt_set or PromptSet()
    class_ids = class_ids or [None] * len(class_names)
    if isinstance(prompt_set, LearnedPromptSet):
        learner = PromptLearner.from_prompt_set(model, prompt_set)
        return learner(model, class_names, class_ids)
    return encode_class_prompts(model, class_names, prompt_set, class_ids, batch_size)


def encode_class_prompts(model, class_names: list[str], prompt_set: PromptSet, class_ids: list | None = None,
                         batch_size: int = 256) -> torch.Tensor:
    """`build_class_embeddings` of a template prompt set, with gradients (for training the text tower)."""
    class_ids = class_ids or [None] * len(class_names)
    texts = [text for name, cid in zip(class_names, class_ids) for text in prompt_set.texts_for(name, cid)]
    chunks = [model.encode_text(texts[i:i + batch_size], normalize=True) for i in range(0, len(texts), batch_size)]
    per_template = torch.cat(chunks).view(len(class_names), len(prompt_set.templates), -1)
    return F.normalize(per_template.mean(dim=1), dim=-1)
