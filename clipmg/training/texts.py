"""The text side of training: every text a frame can be paired with, encoded once per step.

With `contrast="classes"` each step contrasts the batch's frames with one prompt per class (a
template of each class drawn at random with `text_source="random_template"`); with
`contrast="batch"` it contrasts them with the distinct texts of the batch: captions, or
prompts of the batch's classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from clipmg.prompts import PromptSet

#: what a step contrasts the frames with: one text per class, or the texts of the batch
CONTRASTS = ("batch", "classes")
#: the texts of a frame: its caption, its class prompt, or a prompt template drawn at random
TEXT_SOURCES = ("caption", "prompt", "random_template")


class TrainingTexts:
    def __init__(self, texts: list[str], text_labels: torch.Tensor, sample_text: torch.Tensor,
                 templates_per_class: int, contrast: str, random_template: bool, num_classes: int):
        self.texts = texts  # every text, by row
        self.text_labels = text_labels  # (T,) class index of each text
        self.sample_text = sample_text  # (N,) row of each training frame's (first) text
        self.templates_per_class = templates_per_class
        self.contrast, self.random_template, self.num_classes = contrast, random_template, num_classes

    @classmethod
    def build(cls, train_frames: pd.DataFrame, targets: torch.Tensor, class_ids: list[int], class_names: list[str],
              prompt_set: PromptSet, text_source: str, contrast: str) -> TrainingTexts:
        """`targets`: each training frame's class index."""
        random_template = text_source == "random_template"
        if text_source == "caption" and contrast == "batch":
            codes, uniques = pd.factorize(train_frames["caption"].astype(str).str.strip())
            first_sample_of_text = np.unique(codes, return_index=True)[1]
            return cls(list(uniques), targets[torch.as_tensor(first_sample_of_text)],
                       torch.as_tensor(codes, dtype=torch.long), 1, contrast, random_template, len(class_ids))
        per_class = [prompt_set.texts_for(name, cid) for name, cid in zip(class_names, class_ids)]
        t = len(prompt_set.templates)
        return cls([text for texts in per_class for text in texts],
                   torch.arange(len(class_names)).repeat_interleave(t), targets * t, t, contrast, random_template,
                   len(class_ids))

    def for_step(self, batch_texts: torch.Tensor, generator: torch.Generator):
        """(texts, text_labels, per-sample column) of one step whose frames have the text rows
        `batch_texts` (from `sample_text`)."""
        t = self.templates_per_class
        if self.contrast == "classes":
            offsets = (torch.randint(t, (self.num_classes,), generator=generator) if self.random_template
                       else torch.zeros(self.num_classes, dtype=torch.long))
            rows = torch.arange(self.num_classes) * t + offsets
            columns = batch_texts // t
        else:
            if self.random_template:
                batch_texts = batch_texts + torch.randint(t, batch_texts.shape, generator=generator)
            rows, columns = torch.unique(batch_texts, return_inverse=True)
        return [self.texts[i] for i in rows.tolist()], self.text_labels[rows], columns
