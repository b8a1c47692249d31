"""Prompt sets: template filling, the shipped sets, and ensembling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipmg.errors import DataError
from clipmg.prompts import PROMPTS_DIR, PromptSet, build_class_embeddings, load_prompt_set


def test_templates_fill_class_name_and_descriptions_by_id():
    prompts = PromptSet(templates=["a photo of a person {}.", "{}"], descriptions={3: "touching the hat"})
    assert prompts.texts_for("Folding arms", 17) == ["a photo of a person Folding arms.", "Folding arms"]
    assert prompts.texts_for("Touch hat", 3) == ["a photo of a person touching the hat.", "touching the hat"]


@pytest.mark.parametrize("path", sorted(PROMPTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_prompt_sets_load(path):
    prompts = load_prompt_set(path)
    assert prompts.templates and all(t.count("{}") == 1 for t in prompts.templates)
    assert load_prompt_set(path.stem).templates == prompts.templates


def test_descriptions_cover_all_32_imigue_classes():
    prompts = load_prompt_set("descriptions")
    assert sorted(int(k) for k in prompts.descriptions) == list(range(1, 33))


def test_text_prompt_file_and_bad_template(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("# comment\n{}\na person {}.\n")
    assert load_prompt_set(good).templates == ["{}", "a person {}."]
    bad = tmp_path / "bad.yaml"
    bad.write_text("templates:\n  - 'no slot here'\n")
    with pytest.raises(DataError, match=r"bad.yaml: template 1 .*exactly one"):
        load_prompt_set(bad)
    with pytest.raises(DataError, match="neither a file nor a known set"):
        load_prompt_set("no-such-set")


class BagOfWordsModel:
    """Deterministic text encoder: enough to check the ensembling arithmetic."""

    def encode_text(self, texts, normalize=True):
        features = torch.stack([torch.tensor([len(t), t.count("a"), t.count(" "), 1.0]) for t in texts])
        return F.normalize(features, dim=-1) if normalize else features


def test_ensemble_is_normalised_mean_of_normalised_template_embeddings():
    model = BagOfWordsModel()
    prompts = PromptSet(templates=["{}", "a photo of a person {}.", "a tennis player {} at a press conference."])
    classes = ["Folding arms", "Turtle neck"]
    got = build_class_embeddings(model, classes, prompts, batch_size=2)
    for row, name in zip(got, classes):
        per_template = model.encode_text(prompts.texts_for(name))
        torch.testing.assert_close(row, F.normalize(per_template.mean(0), dim=0))
