"""The stall of issue 14, reproduced on generated data: trained from scratch at the old rates (text
1e-3, heads 2e-3), clipmg-small's class text embeddings and image features collapse towards
one point within a few steps, and training then sits near the uniform loss for epochs (on data
with few people, for the whole run). The automatic rates keep them apart. docs/recipes.md has
the measurements behind the rates."""

from __future__ import annotations

import pytest
import torch

from clipmg.training import TrainConfig
from clipmg.training.recipes import AUTO
from clipmg.training.trainer import Trainer

STEPS = 10


@pytest.fixture(scope="module")
def people_dataset(tmp_path_factory):
    """24 classes shared among 5 people, as in the dataset where the stall was seen."""
    from clipmg.synthetic import make_demo_data

    root = tmp_path_factory.mktemp("people")
    make_demo_data(root, classes=24, clips=192, frames_per_clip=2, size=64, seed=0, subjects=5)
    return root


def mean_cosine_distance(features: torch.Tensor) -> float:
    """1 - mean cosine similarity over distinct pairs: 0 when every row points the same way."""
    unit = torch.nn.functional.normalize(features, dim=-1)
    similarity = unit @ unit.T
    n = len(unit)
    return 1.0 - ((similarity.sum() - n) / (n * n - n)).item()


def spreads(model, class_texts, images) -> tuple[float, float]:
    """mean_cosine_distance of the class text and of the image features, in eval mode (the
    model is left training)."""
    model.eval()
    with torch.no_grad():
        text, image = model.encode_text(class_texts), model.encode_image(images)
    model.train()
    return mean_cosine_distance(text), mean_cosine_distance(image)


def batches_of(trainer):
    for epoch in range(trainer.cfg.optim.epochs):
        trainer.train_sampler.set_epoch(epoch)
        yield from trainer.train_loader


# (text rate, heads rate): a fast text tower collapses the class embeddings, fast heads the image
# features; the automatic from-scratch rates keep both apart.
@pytest.mark.parametrize("lr_text,lr_heads,text_collapses,image_collapses", [
    (1e-3, 2e-3, True, True), (1e-3, AUTO, True, False), (AUTO, 2e-3, False, True), (AUTO, AUTO, False, False)])
def test_features_stay_apart_in_the_first_steps_from_scratch(people_dataset, tmp_path, lr_text, lr_heads,
                                                             text_collapses, image_collapses):
    text_before, text_after, image_before, image_after = spreads_over_steps(
        people_dataset, tmp_path, "openclip:clipmg-small", lr_text, lr_heads)
    assert (text_after < 0.25 * text_before) == text_collapses, (text_before, text_after)
    assert (image_after < 0.5 * image_before) == image_collapses, (image_before, image_after)


def spreads_over_steps(dataset, tmp_path, model: str, lr_text, lr_heads) -> tuple[float, float, float, float]:
    """Text and image spreads before and after STEPS steps of training `model` from scratch, at the
    batch of 64 frames the rates were measured with (docs/recipes.md), from the random towers
    themselves: the class prompts are not spread apart first, so the rates alone are measured."""
    cfg = TrainConfig(metadata=str(dataset / "training" / "train.xlsx"), labels=str(dataset / "Clip_label.csv"),
                      split_by="subject", subject_column="Subject", test_fraction=0, model=model, image_size=64,
                      lr_text=lr_text,
                      lr_heads=lr_heads, epochs=10, batch_size=64, workers=0, tensorboard=False, spread_prompts=False,
                      output=str(tmp_path / "run"),
                      device="cpu").validate()
    trainer = Trainer(cfg)
    trainer.setup()
    val_images = next(iter(trainer.val_loader))["image"][:64]
    text_before, image_before = spreads(trainer.model, trainer.texts.texts, val_images)
    for step, batch in zip(range(STEPS), batches_of(trainer)):
        loss = trainer.train_step(batch, torch.Generator().manual_seed(step))
        loss.backward()
        trainer._optimizer_step()
    text_after, image_after = spreads(trainer.model, trainer.texts.texts, val_images)
    return text_before, text_after, image_before, image_after


def test_clipmg_mini_starts_with_its_frames_spread_over_the_embedding_space(people_dataset, tmp_path):
    """clipmg-mini batch-normalises its pooled features: in training mode (what the loss sees) a
    random tower's image features start uncorrelated (mean cosine near 0), where clipmg-small's
    start much closer together."""
    spread = {}
    for model in ("openclip:clipmg-small", "openclip:clipmg-mini"):
        cfg = TrainConfig(metadata=str(people_dataset / "training" / "train.xlsx"),
                          labels=str(people_dataset / "Clip_label.csv"), model=model, image_size=64, workers=0,
                          tensorboard=False, output=str(tmp_path / model[-4:]), device="cpu").validate()
        trainer = Trainer(cfg)
        trainer.setup()
        images = trainer._batch_images(next(iter(trainer.val_loader)))[:64]
        trainer.model.train()
        with torch.no_grad():
            spread[model] = mean_cosine_distance(trainer.model.encode_image(images))
    assert spread["openclip:clipmg-mini"] > 0.9 and spread["openclip:clipmg-mini"] > 2 * spread[
        "openclip:clipmg-small"], spread
