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


def test_templates_are_filled_with_cleaned_names_and_ids_never_change(tmp_path):
    from clipmg.data import load_labels

    labels = tmp_path / "Clip_label.csv"
    labels.write_bytes("\ufeffid,name\r\n16, scraching  back \r\n18,Dustoff clothes\r\n3,Touch Hat\r\n".encode())
    table = load_labels(labels)
    assert list(table) == [3, 16, 18]
    prompts = load_prompt_set("photo")
    texts = [prompts.texts_for(name, cid)[0] for cid, name in table.items()]
    assert texts == ["a photo of a person Touch hat.", "a photo of a person Scratching back.",
                     "a photo of a person Dust off clothes."]
    described = load_prompt_set("descriptions")
    assert described.texts_for(table[16], 16) == ["a person reaching behind to scratch the back."]


# ------------------------------------------------------------------------ learned prompt sets
def test_learned_prompt_set_round_trips_through_its_file(tmp_path):
    from clipmg.errors import CheckpointError
    from clipmg.prompts import LEARNED_FILE, LearnedPromptSet

    context = torch.randn(4, 8)
    learned = LearnedPromptSet(context=context, init=None, model="openclip:clipmg-tiny",
                               descriptions={1: "turtle neck"})
    learned.save(tmp_path / LEARNED_FILE)
    (tmp_path / "config.json").write_text('{"prompts": ' + __import__("json").dumps(learned.to_dict()) + "}")
    for loaded in (PromptSet.from_dict(learned.to_dict(), folder=tmp_path), load_prompt_set(tmp_path),
                   load_prompt_set(tmp_path / LEARNED_FILE)):
        assert isinstance(loaded, LearnedPromptSet)
        assert torch.equal(loaded.context, context)
        assert loaded.to_dict() == learned.to_dict()
    with pytest.raises(CheckpointError, match="checkpoint folder"):
        PromptSet.from_dict(learned.to_dict())
    (tmp_path / LEARNED_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        PromptSet.from_dict(learned.to_dict(), folder=tmp_path)


# ------------------------------------------------------------ training: random_template
def test_random_template_draws_one_template_per_class_per_step(tiny_train_settings):
    from clipmg.training import TrainConfig, Trainer

    for contrast in ("classes", "batch"):
        trainer = Trainer(TrainConfig(**{**tiny_train_settings, "prompts": "photo", "contrast": contrast,
                                         "text_source": "random_template"}).validate())
        trainer.setup()
        templates = load_prompt_set("photo").templates
        names, ids = trainer.data.class_names, trainer.data.class_ids
        batch = next(iter(trainer.train_loader))
        drawn = set()
        for seed in range(12):
            texts, text_labels, columns = trainer.texts.for_step(trainer.texts.sample_text[batch["index"]],
                                                                 torch.Generator().manual_seed(seed))
            for text, label in zip(texts, text_labels.tolist()):
                assert text in [t.format(names[label]) for t in templates]
                drawn.add(text)
            labels = trainer.train_targets[batch["index"]]
            assert torch.equal(text_labels[columns], labels)  # each sample's column has its class
            if contrast == "classes":
                assert text_labels.tolist() == list(range(len(ids)))
        assert len(drawn) > len(names)  # several templates per class over the steps
        loss = trainer.train_step(batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)
