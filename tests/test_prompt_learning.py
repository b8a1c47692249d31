"""Learned prompts (CoOp) and `clipmg prompts evaluate`: the text path from token embeddings is
open_clip's, a learned-prompt checkpoint reloads to identical logits and works with predict, and
the prompt-set table scores every set on the same encoded frames."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from clipmg.checkpoint import save_checkpoint
from clipmg.data import load_labels
from clipmg.errors import ModelError
from clipmg.inference import Classifier, evaluate_checkpoint
from clipmg.jobs.prompt_eval import evaluate_prompt_sets
from clipmg.jobs.prompt_learning import learn_prompts
from clipmg.models import create_model
from clipmg.prompts import (
    LEARNED_FILE,
    LearnedPromptSet,
    PromptLearner,
    PromptSet,
    build_class_embeddings,
)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("openclip:clipmg-tiny").eval()


@pytest.fixture(scope="module")
def base_checkpoint(tiny_dataset, tmp_path_factory):
    """An untrained tiny model saved as a checkpoint of the tiny dataset's classes (no training)."""
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny").eval()
    labels = load_labels(tiny_dataset / "Clip_label.csv")
    folder = tmp_path_factory.mktemp("base") / "run" / "best"
    metadata = tiny_dataset / "training" / "train.xlsx"
    return save_checkpoint(folder, model, {"class_ids": list(labels), "class_names": list(labels.values()),
                                           "prompts": PromptSet().to_dict(), "preprocess": model.preprocess_config,
                                           "train": {"metadata": str(metadata)}})


def test_text_from_token_embeddings_is_open_clips_encode_text(tiny_model):
    tokens = tiny_model.tokenizer(["folding arms", "a photo of a person turtle neck."])
    with torch.no_grad():
        expected = tiny_model.clip.encode_text(tokens, normalize=True)
        got = tiny_model.encode_text_embeddings(tiny_model.token_embedding(tokens), tiny_model.eot_positions(tokens))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_context_from_a_phrase_equals_the_written_prompt(tiny_model):
    """Context initialised from 'a photo of a' + class template '{} person.' is the text
    'a photo of a <name> person.': the learner inserts the context right after the start token."""
    learner = PromptLearner.create(tiny_model, init="a photo of a", class_template="{} person.")
    assert learner.n_ctx == 4
    names = ["folding arms", "turtle neck"]
    with torch.no_grad():
        got = learner(tiny_model, names)
        expected = tiny_model.encode_text([f"a photo of a {n} person." for n in names])
        via_set = build_class_embeddings(tiny_model, names, learner.to_prompt_set("openclip:clipmg-tiny"))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(via_set, expected, rtol=0, atol=1e-6)


def test_only_the_context_gets_gradients_and_width_and_length_are_checked(tiny_model):
    learner = PromptLearner.create(tiny_model, n_ctx=3, seed=1)
    for param in tiny_model.parameters():
        param.requires_grad_(False)
    learner(tiny_model, ["a", "b"]).sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    with pytest.raises(ModelError, match="text width"):
        PromptLearner.from_prompt_set(tiny_model, LearnedPromptSet(context=torch.zeros(2, 7)))
    with pytest.raises(ModelError, match="context length"):
        PromptLearner.create(tiny_model, n_ctx=31)(tiny_model, ["folding arms"])


def test_learned_prompt_checkpoint_reloads_to_identical_logits_and_predicts(base_checkpoint, tiny_dataset,
                                                                           tmp_path):
    metadata = tiny_dataset / "training" / "train.xlsx"
    summary = learn_prompts(tmp_path / "learn", metadata, checkpoint=base_checkpoint, n_ctx=4, epochs=2,
                            batch_size=8, lr=1e-2, workers=0, tensorboard=False, seed=0)
    best = tmp_path / "learn" / "best"
    assert (best / LEARNED_FILE).is_file() and (tmp_path / "learn" / "history.csv").is_file()
    assert "Prompt learning" in (best / "README.md").read_text()  # its model card
    assert (tmp_path / "learn" / "split.csv").is_file()  # the base run has no split.csv: a clip split
    assert "classnames" in summary["baselines"] and 1 <= summary["best"]["epoch"] <= 2
    assert summary["best"]["top1"] >= summary["last"]["top1"]

    first = Classifier.from_checkpoint(best, device="cpu")
    second = Classifier.from_checkpoint(best, device="cpu")
    assert isinstance(PromptSet.from_dict(first.config["prompts"], best), LearnedPromptSet)
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(first.logits(images), second.logits(images))
    plain = build_class_embeddings(first.model, first.class_names, PromptSet(), class_ids=first.class_ids)
    assert not torch.allclose(first.class_embeddings, plain)



def test_prompt_sets_table_matches_evaluate_and_writes_files(base_checkpoint, tiny_dataset, tmp_path, capsys):
    from clipmg.cli import main

    metadata = tiny_dataset / "training" / "train.xlsx"
    learned = tmp_path / "learned"
    PromptLearner.create(Classifier.from_checkpoint(base_checkpoint).model, n_ctx=2).to_prompt_set().save(
        tmp_path / LEARNED_FILE)
    learned.mkdir()
    (tmp_path / LEARNED_FILE).rename(learned / LEARNED_FILE)
    out = tmp_path / "eval"
    code = main(["-q", "prompts", "evaluate", "--checkpoint", str(base_checkpoint), "--metadata", str(metadata),
                 "--prompts", "classnames", "photo", "press_conference", str(learned), "--out", str(out),
                 "--workers", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "prompts.csv")
    assert table["prompts"].tolist()[:3] == ["classnames", "photo", "press_conference"]
    assert table["prompts"][3].startswith("learned:") and table["type"].tolist()[3] == "learned"
    assert all(name in printed for name in ("| classnames |", "| photo |", "| press_conference |"))
    for column in ("top1", "top5", "balanced_accuracy", "clip_top1"):
        assert table[column].between(0, 1).all()
    assert (out / "prompts.md").read_text().count("\n| ") == 5  # header + 4 sets
    assert len([p for p in (out / "tensorboard").iterdir() if p.is_dir()]) == 4
    reference = evaluate_checkpoint(base_checkpoint, metadata, out_dir=tmp_path / "ref", workers=0,
                                    prompts="photo")
    photo = table.set_index("prompts").loc["photo"]
    assert photo["top1"] == pytest.approx(reference["top1"]) and photo["clip_top1"] == pytest.approx(
        reference["clip_top1"])


def test_zero_shot_by_model_name_needs_labels(tiny_dataset, tmp_path):
    from clipmg.errors import DataError

    metadata = tiny_dataset / "training" / "train.xlsx"
    with pytest.raises(DataError, match="--labels"):
        evaluate_prompt_sets(["classnames"], metadata, model="clipmg-tiny")
    result = evaluate_prompt_sets(["classnames", "descriptions"], metadata, model="clipmg-tiny",
                                  labels=tiny_dataset / "Clip_label.csv", out_dir=tmp_path, workers=0,
                                  tensorboard=False)
    assert len(result["table"]) == 2 and "zero-shot" in result["model"]
