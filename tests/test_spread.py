"""A random text tower's class prompts start apart (clipmg.training.spread): names one token
apart begin nearly at one point, and a few text-only steps part them; towers that already know
language are left alone."""

from __future__ import annotations

import string

import torch

from clipmg.models import create_model
from clipmg.models.base import CLIP_WEIGHTS, TEXT
from clipmg.prompts import PromptSet
from clipmg.training.spread import SPREAD_TARGET, spread_class_prompts

LETTERS = [f"letter {c}" for c in string.ascii_uppercase[:24]]


def closest_pair(model, names: list[str]) -> float:
    with torch.no_grad():
        embeddings = model.encode_text(names)
    return float((embeddings @ embeddings.T).fill_diagonal_(-1).max())


def test_names_one_token_apart_are_spread_apart():
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    assert closest_pair(model, LETTERS) > SPREAD_TARGET  # where a random tower starts them
    spread = spread_class_prompts(model, LETTERS, PromptSet(), steps=400)  # 24 classes in 64 dimensions
    assert 0 < spread["steps"] < 400 and spread["before"] > SPREAD_TARGET > spread["after"]
    model.eval()
    assert closest_pair(model, LETTERS) < SPREAD_TARGET


def test_templates_are_averaged_like_the_class_embeddings():
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    prompts = PromptSet(templates=["a photo of {}.", "{}"])
    spread = spread_class_prompts(model, LETTERS[:6], prompts)
    assert spread["after"] < SPREAD_TARGET


def test_a_text_tower_with_weights_is_left_alone():
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    model.tower_origins = {**model.tower_origins, TEXT: CLIP_WEIGHTS}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert spread_class_prompts(model, LETTERS, PromptSet()) is None
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
