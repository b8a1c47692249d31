"""The model card (README.md) every checkpoint folder gets from `save_checkpoint`: it says what
config.json holds (model, classes, data and split with its leakage, recipe, metrics and the split
they were measured on, how to run test.py), and it is written atomically with the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipmg.checkpoint import CARD, model_card, save_checkpoint, write_model_card
from clipmg.errors import OutputError
from clipmg.models import create_model

CONFIG = {
    "class_ids": [1, 2, 7],
    "class_names": ["Folding arms", "Scratching | head", "Touching nose"],
    "prompts": {"templates": ["a photo of a person {}"]},
    "train": {"metadata": "DATA/training/train.xlsx", "labels": "DATA/Clip_label.csv", "split": "runs/a/split.csv",
              "epochs": 12, "batch_size": 64, "lr_image": 1e-05, "lr_text": 3.5e-06, "lr_heads": 0.002,
              "loss": "ce", "init_from": None},
    "split": {"by": "clip", "rows_train": 800, "rows_val": 200, "leakage": 0.0},
    "metrics": {"n_images": 200, "top1": 0.83125, "balanced_accuracy": 0.7612, "clip_top1": 0.844},
    "epoch": 9,
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("openclip:clipmg-tiny")


def test_card_states_what_config_json_holds(model, tmp_path):
    folder = save_checkpoint(tmp_path / "best", model, CONFIG)
    card = (folder / CARD).read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: clipmg\n")  # the Hub's metadata header
    assert "# openclip:clipmg-tiny" in card
    for row in ("| 1 | Folding arms |", "| 2 | Scratching \\| head |", "| 7 | Touching nose |"):
        assert row in card  # the classes, table cells escaped
    assert "| metadata | DATA/training/train.xlsx |" in card and "| split rows_val | 200 |" in card
    assert "**Leakage: 0.0**" in card
    # the rates as config.json holds them (resolved numbers), not rounded away
    assert "| lr_image | 1e-05 |" in card and "| lr_text | 3.5e-06 |" in card and "| lr_heads | 0.002 |" in card
    assert "| init_from | - |" in card
    assert "Measured on the validation frames of `runs/a/split.csv` (split by clip, leakage 0.0), at epoch 9" in card
    assert "| top-1 | 0.8313 |" in card and "| clip-level top-1 | 0.8440 |" in card
    assert "python test.py --imagepathscsv frames.csv --columnname Path --checkpoint" in card
    stored = json.loads((folder / "config.json").read_text())
    assert model_card(stored, name="best") == card  # regenerated from config.json alone


def test_a_bare_checkpoint_gets_a_card_that_says_what_is_missing(model, tmp_path):
    folder = save_checkpoint(tmp_path / "bare", model, {"class_ids": [1], "class_names": ["one"]})
    card = (folder / CARD).read_text()
    assert "records no training data" in card and "records no metrics" in card
    assert "hf-hub:someone/bare" in write_model_card(folder, hub_repo="someone/bare").read_text()


def test_card_is_written_atomically_with_the_folder(model, tmp_path):
    folder = save_checkpoint(tmp_path / "best", model, CONFIG)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def failing_writer(staging: Path) -> None:
        assert (staging / CARD).is_file()  # the card is staged with the rest
        raise OSError("disk full")

    changed = {**CONFIG, "metrics": {"top1": 0.1}}
    with pytest.raises(OutputError, match="previous checkpoint .* is untouched"):
        save_checkpoint(folder, model, changed, extra_writers=[failing_writer])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # old card, old weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no staging folder left
