"""Settings with owners: every error a user can cause ends in one line and exit 2, a setting a
mode would ignore is refused, `clipmg train --help` documents every flag by section, each
vocabulary has one owner, and the configurations and checkpoints of earlier versions still load."""

from __future__ import annotations

import pytest

from clipmg.cli import main
from clipmg.errors import DataError
from clipmg.models.registry import DEFAULT_MODEL
from clipmg.training import TrainConfig
from clipmg.training.config import CHOICES, FLAGS, SECTIONS
from clipmg.training.model import build_model


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def data_args(tiny_dataset) -> list[str]:
    return ["--metadata", str(tiny_dataset / "training" / "train.xlsx"),
            "--labels", str(tiny_dataset / "Clip_label.csv")]


# ------------------------------------------------------------------ user errors: one line, exit 2
@pytest.mark.parametrize("fraction", ["1.5", "0", "-0.2"])
def test_split_with_a_validation_fraction_outside_0_1_exits_2_with_one_line(tiny_dataset, tmp_path, capsys,
                                                                             fraction):
    code, _, err = run_cli(["-q", "split", *data_args(tiny_dataset), "--val-fraction", fraction,
                            "--out", str(tmp_path / "split.csv")], capsys)
    assert_one_line_error(code, err, "val_fraction", fraction)
    assert not (tmp_path / "split.csv").exists()


# ------------------------------------------------------- settings a mode would ignore are refused
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A 32 px tiny open_clip model saved as a checkpoint of today's layout (train record included)."""
    from clipmg.checkpoint import save_checkpoint
    from clipmg.models import create_model

    model = create_model("openclip:clipmg-tiny", image_size=32)
    record = {**TrainConfig().to_dict(), "model": "openclip:clipmg-tiny", "image_size": 32}
    folder = tmp_path_factory.mktemp("tiny_checkpoint") / "best"
    save_checkpoint(folder, model, {"class_ids": [1, 2, 3, 4], "class_names": ["a", "b", "c", "d"],
                                    "preprocess": model.preprocess_config, "train": record})
    return folder


def test_init_from_with_another_image_size_exits_2_naming_the_conflict(tiny_dataset, tiny_checkpoint, tmp_path,
                                                                       capsys):
    code, _, err = run_cli(["-q", "train", *data_args(tiny_dataset), "--init-from", str(tiny_checkpoint),
                            "--image-size", "64", "--workers", "0", "--output", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "--init-from", "image_size=64", "the checkpoint's: 32")
    assert not (tmp_path / "run" / "best").exists()


@pytest.mark.parametrize("settings,named", [
    ({"model": "openclip:ViT-B-32"}, "model='openclip:ViT-B-32'"),
    ({"pretrained": "openai"}, "pretrained='openai'"),
    ({"temperature": 0.05}, "temperature=0.05"),
    ({"model": "hybrid", "embed_dim": 16}, "embed_dim=16"),
])
def test_init_from_refuses_each_backend_setting_the_checkpoint_does_not_have(tiny_checkpoint, settings, named):
    cfg = TrainConfig(init_from=str(tiny_checkpoint), **settings).validate()
    with pytest.raises(DataError, match="would be ignored") as error:
        build_model(cfg, [1, 2, 3, 4], ["a", "b", "c", "d"])
    assert named in str(error.value)


def test_init_from_accepts_the_settings_the_checkpoint_was_made_with(tiny_checkpoint):
    cfg = TrainConfig(init_from=str(tiny_checkpoint), model="openclip:clipmg-tiny", image_size=32).validate()
    model = build_model(cfg, [1, 2, 3, 4], ["a", "b", "c", "d"])
    assert model.preprocess_config["image_size"] == 32


@pytest.mark.parametrize("settings,named", [
    ({"pooling": "mean"}, "pooling='mean'"),
    ({"image_encoder": "timm:resnet18", "embed_dim": 64}, "image_encoder='timm:resnet18', embed_dim=64"),
    ({"model": "timm:resnet18", "head": "linear", "temperature": 0.05}, "temperature=0.05"),
    ({"head": "linear", "loss": "js"}, "loss='js'"),
    ({"focal_gamma": 2.0}, "focal_gamma=2.0"),
    ({"head_dropout": 0.1}, "head_dropout=0.1"),
    ({"contrast": "batch", "logit_adjust_tau": 1.0}, "logit_adjust_tau=1.0"),
    ({"keypoints": "cache/"}, "keypoints='cache/'"),
    ({"hand_margin": 0.5}, "hand_margin=0.5"),
    ({"pose_fusion": "concat", "hand_full_frame": False}, "hand_full_frame=False"),
    ({"lora_targets": "linear"}, "lora_targets='linear'"),
    ({"plateau_patience": 5}, "plateau_patience=5"),
    ({"split": "split.csv", "val_fraction": 0.3}, "val_fraction=0.3"),
    ({"subject_column": "Subject"}, "subject_column='Subject'"),
    ({"embed_max_images": 10}, "embed_max_images=10"),
])
def test_a_setting_the_chosen_mode_ignores_is_refused_by_name(settings, named):
    with pytest.raises(DataError, match="would be ignored") as error:
        TrainConfig(**settings).validate()
    message = str(error.value)
    assert named in message and "\n" not in message


@pytest.mark.parametrize("settings", [
    {"model": "hybrid", "pooling": "mean", "embed_dim": 64, "image_encoder": "timm:resnet18"},
    {"head": "linear", "focal_gamma": 2.0, "class_weighting": "sqrt", "head_dropout": 0.1},
    {"logit_adjust_tau": 1.0},
    {"hand_crops": True, "hand_margin": 0.5, "hand_full_frame": False, "keypoints": "cache/"},
    {"pose_fusion": "gated", "keypoints": "cache/"},
    {"lora_rank": 4, "lora_alpha": 8.0, "lora_targets": "linear"},
    {"scheduler": "plateau", "plateau_patience": 5},
    {"split_by": "subject", "subject_column": "Subject", "val_fraction": 0.3},
    {"embed_every": 1, "embed_max_images": 10},
])
def test_the_same_settings_are_accepted_in_the_mode_that_uses_them(settings):
    TrainConfig(**settings).validate()


# ----------------------------------------------------------------- --help, sections and vocabularies
def train_parser():
    import argparse

    from clipmg.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"]


def test_every_train_flag_has_help_and_its_default_grouped_by_section():
    parser = train_parser()
    titles = {group.title: group for group in parser._action_groups}
    for section, (title, _) in SECTIONS.items():
        assert title in titles, section
    for setting in FLAGS:
        assert setting.section in SECTIONS and setting.help, setting.name
        flag = "--" + setting.name.replace("_", "-")
        group = titles[SECTIONS[setting.section][0]]
        action = next(a for a in group._group_actions if flag in a.option_strings)
        assert "(default" in action.help, flag
    text = " ".join(parser.format_help().split())  # argparse wraps long defaults onto a new line
    assert "(default: classes)" in text and f"(default: {DEFAULT_MODEL})" in text


def test_each_choice_comes_from_its_owner_and_the_cli_offers_the_same():
    from clipmg.data.samplers import BALANCED_SAMPLERS
    from clipmg.data.splits import SPLIT_BY
    from clipmg.losses import CLASS_WEIGHTINGS, LOSS_NAMES
    from clipmg.models.registry import HEAD_KINDS, POSE_FUSIONS
    from clipmg.models.temporal import TEMPORAL_HEADS
    from clipmg.training.texts import CONTRASTS, TEXT_SOURCES
    from clipmg.utils import PRECISIONS

    owners = {"split_by": SPLIT_BY, "loss": LOSS_NAMES, "balanced_sampler": BALANCED_SAMPLERS,
              "class_weighting": CLASS_WEIGHTINGS, "head": HEAD_KINDS, "pose_fusion": POSE_FUSIONS,
              "temporal": TEMPORAL_HEADS, "contrast": CONTRASTS, "text_source": TEXT_SOURCES,
              "precision": PRECISIONS}
    for name, vocabulary in owners.items():
        assert CHOICES[name] is vocabulary, name
    actions = {a.dest: a for a in train_parser()._actions}
    for name, vocabulary in CHOICES.items():
        assert tuple(actions[name].choices) == tuple(vocabulary), name


def test_the_head_vocabulary_and_the_heads_parameter_part_have_different_names():
    from clipmg.models import base, registry

    assert base.HEADS == "heads" and registry.HEAD_KINDS == ("contrastive", "linear")
    assert not hasattr(registry, "HEADS")


def test_a_choice_outside_the_owners_vocabulary_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--loss", "focal"])
    assert exit_.value.code == 2 and "invalid choice: 'focal'" in capsys.readouterr().err


# ------------------------------------------------------------------------ one function per policy
def test_training_and_inference_share_one_precision_policy(monkeypatch):
    import torch

    from clipmg.inference import Classifier
    from clipmg.training import optim
    from clipmg.utils import autocast_dtype

    assert optim.autocast_dtype is autocast_dtype
    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp16", "cuda") is torch.float16 and autocast_dtype("fp32", "cuda") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert autocast_dtype("auto", "cuda") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert autocast_dtype("auto", "cuda") is torch.bfloat16
    calls = []
    monkeypatch.setattr("clipmg.inference.classifier.autocast_dtype",
                        lambda precision, device: calls.append((precision, device)))
    Classifier.autocast(type("Stub", (), {"device": torch.device("cpu")})())
    assert calls == [("auto", torch.device("cpu"))]


@pytest.mark.parametrize("cores,device,workers", [(16, "cpu", 2), (4, "cpu", 0), (2, "cuda", 2), (16, "cuda", 4)])
def test_training_and_inference_share_one_decoding_worker_rule(monkeypatch, cores, device, workers):
    import clipmg.inference
    from clipmg.training.data import default_train_workers
    from clipmg.utils import default_workers

    assert default_train_workers is default_workers and clipmg.inference.default_workers is default_workers
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_workers(device) == workers


@pytest.mark.parametrize("header,found", [
    (["Path", "path"], "Path"),  # the exact name first
    (["\ufeffPATH ", "Class"], "\ufeffPATH "),  # a byte-order mark, case and spaces ignored
    (["Class", "Video ID"], None),
])
def test_a_column_is_found_by_one_documented_rule(header, found):
    from clipmg.data import find_column

    assert find_column(header, "Path") == found


def test_two_loose_matches_are_an_error_naming_both_in_metadata_and_prediction_lists(tmp_path, tiny_checkpoint):
    from clipmg.data import read_metadata
    from clipmg.inference import predict_csv

    table = tmp_path / "frames.csv"
    table.write_text("path,PATH,Class,Video ID,Frame ID\na.jpg,a.jpg,1,v1,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"'path', 'PATH' all match 'Path'") as error:
        read_metadata(table, labels=None)
    assert str(table) in str(error.value)
    with pytest.raises(DataError, match=r"'path', 'PATH' all match 'Path'"):
        predict_csv(tiny_checkpoint, table, output=tmp_path / "out.csv", workers=0)


# ------------------------------------------------- configurations and checkpoints of earlier versions
#: `config.yaml` as `clipmg train` wrote it before the settings had sections (every field, flat)
OLD_CONFIG_YAML = """\
metadata: METADATA
labels: LABELS
image_root: null
path_column: Path
class_column: Class
video_column: Video ID
frame_column: Frame ID
caption_column: Caption
split: null
split_by: clip
val_fraction: 0.2
subject_column: null
skip_bad_images: false
workers: 0
model: openclip:clipmg-tiny
pretrained: null
image_pretrained: null
text_pretrained: null
image_encoder: null
text_encoder: null
embed_dim: null
image_size: 32
pooling: cls
temperature: null
learn_temperature: true
freeze_image: false
freeze_text: false
init_from: null
head: contrastive
init_head: random
head_dropout: 0.0
pose_fusion: none
keypoints: null
hand_crops: false
hand_margin: 0.3
hand_full_frame: true
clip_frames: null
temporal: mean
prompts: null
text_source: caption
loss: ce
contrast: classes
logit_adjust_tau: 0.0
balanced_sampler: none
class_weighting: none
focal_gamma: 0.0
epochs: 1
batch_size: 8
lr_image: auto
lr_text: auto
lr_heads: auto
weight_decay: 0.01
scheduler: cosine
warmup: 1
plateau_patience: 2
grad_accum: 1
grad_clip: 1.0
precision: auto
max_steps_per_epoch: 1
ema_decay: null
layer_decay: 1.0
lora_rank: 0
lora_alpha: null
lora_targets: null
grad_checkpointing: false
tta: none
output: OUTPUT
seed: 1
device: auto
monitor: top1
patience: null
save_every_steps: null
tensorboard: false
hflip: false
embed_every: null
embed_max_images: 500
"""


def old_config(tiny_dataset, output) -> str:
    return (OLD_CONFIG_YAML.replace("METADATA", str(tiny_dataset / "training" / "train.xlsx"))
            .replace("LABELS", str(tiny_dataset / "Clip_label.csv")).replace("OUTPUT", str(output)))


def test_a_config_yaml_of_the_flat_format_loads_every_value_and_trains(tiny_dataset, tmp_path, capsys):
    import yaml

    from clipmg.training import config_from_dict, load_config

    path = tmp_path / "config.yaml"
    path.write_text(old_config(tiny_dataset, tmp_path / "run"), encoding="utf-8")
    stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(stored) <= {setting.name for setting in FLAGS}
    cfg = config_from_dict(load_config(path)).validate()
    assert {name: cfg.to_dict()[name] for name in stored} == stored
    code, _, err = run_cli(["-q", "train", "--config", str(path)], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_the_train_record_of_a_checkpoint_written_the_old_way_loads_and_fine_tunes(tiny_dataset, tmp_path):
    import yaml

    from clipmg.checkpoint import load_checkpoint, save_checkpoint
    from clipmg.models import create_model
    from clipmg.training import config_from_dict

    record = yaml.safe_load(old_config(tiny_dataset, tmp_path / "run"))
    model = create_model("openclip:clipmg-tiny", image_size=32)
    folder = save_checkpoint(tmp_path / "old" / "best", model, {
        "class_ids": [1, 2, 3, 4], "class_names": ["a", "b", "c", "d"], "preprocess": model.preprocess_config,
        "prompts": {}, "train": record, "metrics": {"top1": 0.5}})
    _, config = load_checkpoint(folder)
    assert config_from_dict(config["train"]).validate() == config_from_dict(record)
    # its settings passed on to a fine-tuning run (as `clipmg compare` and `clipmg probe` do)
    cfg = config_from_dict({**config["train"], "init_from": str(folder)}).validate()
    tuned = build_model(cfg, config["class_ids"], config["class_names"])
    assert tuned.preprocess_config["image_size"] == 32


def test_a_setting_renamed_since_still_loads_under_its_new_name():
    from clipmg.training import config_from_dict

    assert config_from_dict({"warmup_steps": 3}).optim.warmup == 3.0


# ------------------------------------------------------------------- sections with owners
def section_types():
    from clipmg.training.config import SECTION_TYPES

    return SECTION_TYPES


@pytest.mark.parametrize("section,bad,named", [
    ("data", {"val_fraction": 1.5}, "val_fraction"),
    ("network", {"clip_frames": 0}, "clip_frames"),
    ("text", {"text_source": "subtitles"}, "text_source"),
    ("objective", {"focal_gamma": -1.0}, "focal_gamma"),
    ("optim", {"epochs": 0}, "epochs"),
    ("tuning", {"layer_decay": 0.0}, "layer_decay"),
    ("run", {"monitor": "top_1"}, "monitor"),
])
def test_each_section_refuses_a_bad_value_of_its_own_in_one_line_naming_the_setting(section, bad, named):
    with pytest.raises(DataError) as alone:
        section_types()[section].from_flat(bad).validate()
    with pytest.raises(DataError) as within:
        TrainConfig(**bad).validate()
    message = str(alone.value)
    assert named in message and "\n" not in message
    assert str(within.value) == message


def test_each_section_owns_the_flags_of_its_help_group_and_every_flag_has_one_owner():
    import re

    owners = {kind.section: [flag.name for flag in kind.flags()] for kind in section_types().values()}
    assert list(owners) == list(SECTIONS)
    assert [name for names in owners.values() for name in names] == [flag.name for flag in FLAGS]
    text = train_parser().format_help()
    starts = [text.index(f"\n{title}:\n") for title, _ in SECTIONS.values()]
    for section, start, end in zip(owners, starts, [*starts[1:], len(text)]):
        shown = re.findall(r"^  --([a-z-]+)", text[start:end], flags=re.MULTILINE)
        assert [name.replace("-", "_") for name in shown] == owners[section], section


def test_a_flat_config_round_trips_through_its_sections_to_the_identical_flat_dict(tiny_dataset, tmp_path):
    import yaml

    flat = {**TrainConfig().to_dict(), **yaml.safe_load(old_config(tiny_dataset, tmp_path)), "class_column": "Label",
            "lr_heads": 1e-3, "test_fraction": 0.0, "preempt_signal": "USR1"}
    cfg = TrainConfig.from_flat(flat)
    assert cfg.to_dict() == flat and list(cfg.to_dict()) == list(flat)
    by_section = TrainConfig(**{attribute: getattr(cfg, attribute) for attribute in section_types()})
    assert by_section == cfg and TrainConfig(**flat) == cfg
    assert cfg.data.columns.class_ == "Label" and cfg.optim.lr_heads == 1e-3 and cfg.run.preempt_signal == "USR1"


def test_the_data_section_holds_the_column_names_as_the_data_layer_s_columns():
    from clipmg.data import Columns

    data = TrainConfig(class_column="Label", caption_column="Text").data
    assert data.columns == Columns(class_="Label", caption="Text")
    assert data.to_flat()["path_column"] == "Path" and data.to_flat()["class_column"] == "Label"


def test_flat_names_still_read_and_set_the_setting_in_its_section():
    cfg = TrainConfig(epochs=3)
    assert cfg.epochs == cfg.optim.epochs == 3
    cfg.max_steps_per_epoch, cfg.video_column = 2, "Clip"
    assert cfg.optim.max_steps_per_epoch == 2 and cfg.data.columns.video == "Clip"
    assert cfg.replace(epochs=5).optim.epochs == 5 and cfg.optim.epochs == 3
    with pytest.raises(AttributeError):
        cfg.not_a_setting  # noqa: B018
    with pytest.raises(TypeError, match="not_a_setting"):
        TrainConfig(not_a_setting=1)
    with pytest.raises(DataError, match="unknown setting"):
        TrainConfig.from_flat({"not_a_setting": 1})


def test_each_backend_maps_the_model_spec_to_its_own_options_and_training_names_none():
    from pathlib import Path

    import clipmg.training
    from clipmg.models import HybridModel, OpenClipModel

    spec = TrainConfig(model="hybrid", embed_dim=16, pooling="mean").network.spec(num_classes=4)
    assert HybridModel.options_from_spec(spec) == {
        "image": "timm:resnet50", "text": "hf:distilbert-base-uncased", "pretrained": False, "pooling": "mean",
        "image_size": None, "temperature": None, "learn_temperature": True, "embed_dim": 16}
    assert set(OpenClipModel.options_from_spec(spec)) == set(OpenClipModel.spec_settings)
    assert spec.wrap.options()["num_classes"] == 4 and spec.wrap.options()["temporal"] is None
    for path in Path(clipmg.training.__file__).parent.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert '"hybrid"' not in source and "models.supervised" not in source, path
