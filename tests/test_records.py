"""The records that cross layers: a checkpoint's config.json (`CheckpointRecord`), a run's
progress in trainer_state.pt (`TrainerState`) and when a schedule is stepped
(`SchedulerInterval`). Files written before the records existed load through them unchanged,
files written now hold the keys they always held, and a checkpoint reference is resolved once
per load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipmg.checkpoint import (
    CONFIG,
    TRAINER_STATE,
    CheckpointRecord,
    load_trainer_state,
    read_checkpoint_config,
    read_record,
    save_checkpoint,
)
from clipmg.models import create_model
from clipmg.training import TrainConfig
from clipmg.training.optim import SchedulerInterval, build_scheduler
from clipmg.training.state import TrainerState

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# config.json as the trainer of the version before the records wrote it (its `train` shortened:
# the record keeps whatever that dict holds)
TRAINER_CONFIG = {
    "format_version": 1,
    "model": {"backend": "openclip", "name": "openclip:clipmg-tiny", "model_name": "clipmg-tiny",
              "pretrained": None, "image_size": 32},
    "class_ids": [1, 2, 3, 4],
    "class_names": ["a", "b", "c", "d"],
    "prompts": {"name": "classnames", "templates": ["{}"], "descriptions": {}},
    "preprocess": {"image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"},
    "train": {"metadata": "DATA/training/train.xlsx", "epochs": 2, "batch_size": 8, "lr_image": 1e-05,
              "scheduler": "cosine", "init_from": None, "split": None},
    "metrics": {"top1": 0.5, "n_images": 8},
    "epoch": 2,
    "split": {"by": "clip", "rows_train": 24, "rows_val": 8, "leakage": 0.0},
}
# what the other writers of that version added or left out
PROBE_CONFIG = {**{k: v for k, v in TRAINER_CONFIG.items() if k != "epoch"},
                "probe": {"l2": 0.001, "source": "runs/a/best"}, "split": {"source": "runs/a/split.csv"}}
PROMPT_LEARNING_CONFIG = {**{k: v for k, v in TRAINER_CONFIG.items() if k not in ("epoch", "split")},
                          "prompt_learning": {"n_ctx": 4, "baselines": {"classnames": {"top1": 0.25}}}}
WISE_CONFIG = {**TRAINER_CONFIG, "wise": {"from": "zs/best", "to": "ft/best", "alpha": 0.5}}
IMPORTED_CONFIG = {k: v for k, v in TRAINER_CONFIG.items() if k not in ("train", "metrics", "epoch", "split")}
IMPORTED_CONFIG["imported"] = {"from": "model.pt", "format": "original CLIPModel state dict"}
OPEN_CLIP_CONFIG = {**TRAINER_CONFIG, "open_clip": {"name": "clipmg-tiny", "weights": "model.safetensors"}}
# trainer_state.pt's progress as the trainer of that version saved it, a dict under "trainer"
TRAINER_PROGRESS = {"epoch": 1, "step_in_epoch": 3, "global_step": 7, "best": 0.5, "best_epoch": 1,
                    "epochs_without_improvement": 0,
                    "history": [{"epoch": 1, "train_loss": 1.2, "val_top1": 0.5, "finished_at": 1700000000.0}]}


@pytest.mark.parametrize("stored", [TRAINER_CONFIG, PROBE_CONFIG, PROMPT_LEARNING_CONFIG, WISE_CONFIG,
                                    IMPORTED_CONFIG, OPEN_CLIP_CONFIG],
                         ids=["trainer", "probe", "prompt-learning", "wise", "imported", "open-clip"])
def test_a_config_json_of_each_writer_reads_into_the_record_and_writes_back_the_same(stored, tmp_path):
    (tmp_path / CONFIG).write_text(json.dumps(stored, indent=2))
    record = read_record(tmp_path)
    assert record.class_ids == [1, 2, 3, 4] and record.model["name"] == "openclip:clipmg-tiny"
    assert record.train == stored.get("train", {})
    assert record.extra == {}  # every key these writers put there is a field
    assert record.to_json_dict() == stored  # same keys, same values


def test_the_trainer_record_fields_are_those_of_config_json():
    record = CheckpointRecord.from_json_dict(TRAINER_CONFIG)
    assert record.epoch == 2 and record.metrics["top1"] == 0.5 and record.split["leakage"] == 0.0
    assert record.train["lr_image"] == 1e-05 and record.preprocess["image_size"] == 32
    assert record.probe is None and record.wise is None


def test_an_older_config_json_without_the_later_keys_reads_with_defaults():
    record = CheckpointRecord.from_json_dict({"model": {"name": "x"}, "class_ids": [3], "class_names": ["c"]})
    assert record.train == {} and record.metrics is None and record.epoch is None and record.prompts is None
    assert record.format_version == 1
    assert record.to_json_dict() == {"format_version": 1, "model": {"name": "x"}, "class_ids": [3],
                                     "class_names": ["c"]}


def test_a_key_this_version_does_not_know_is_kept_and_written_back():
    stored = {**TRAINER_CONFIG, "calibration": {"temperature": 1.3}}
    record = CheckpointRecord.from_json_dict(stored)
    assert record.extra == {"calibration": {"temperature": 1.3}}
    assert record.to_json_dict() == stored


def test_extra_cannot_hide_a_field():
    with pytest.raises(ValueError, match="metrics"):
        CheckpointRecord(extra={"metrics": {}})


def test_a_record_saved_as_a_checkpoint_holds_the_keys_a_dict_did(tmp_path):
    model = create_model("openclip:clipmg-tiny", image_size=32)
    fields = {k: v for k, v in TRAINER_CONFIG.items() if k not in ("format_version", "model")}
    from_record = save_checkpoint(tmp_path / "record", model, CheckpointRecord(**fields))
    from_dict = save_checkpoint(tmp_path / "dict", model, fields)
    written = read_checkpoint_config(from_record)
    assert written == read_checkpoint_config(from_dict)
    assert list(written) == list(TRAINER_CONFIG)  # the keys, in the order the trainer wrote them
    assert written["model"] == model.model_config and written["format_version"] == 1


def test_a_trainer_state_file_of_the_earlier_format_resumes_through_trainer_state(tmp_path):
    (tmp_path / CONFIG).write_text(json.dumps(TRAINER_CONFIG))
    torch.save({"optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "scaler": {},
                "trainer": TRAINER_PROGRESS, "adapters": {}, "ema": {}}, tmp_path / TRAINER_STATE)
    state = TrainerState.from_dict(load_trainer_state(tmp_path)["trainer"])
    assert (state.epoch, state.step_in_epoch, state.global_step) == (1, 3, 7)
    assert state.best == 0.5 and state.best_epoch == 1 and state.best_row()["val_top1"] == 0.5
    assert state.to_dict() == TRAINER_PROGRESS


def test_trainer_state_is_saved_as_plain_values_that_weights_only_loading_accepts(tmp_path):
    state = TrainerState.from_dict(TRAINER_PROGRESS)
    state.finish_epoch({"epoch": 2, "val_top1": 0.4}, 0.4, improved=False)
    torch.save({"trainer": state.to_dict()}, tmp_path / "state.pt")
    loaded = TrainerState.from_dict(torch.load(tmp_path / "state.pt", weights_only=True)["trainer"])
    assert loaded == state
    assert (loaded.epoch, loaded.step_in_epoch, loaded.epochs_without_improvement) == (2, 0, 1)
    assert loaded.best_row()["epoch"] == 1  # the best epoch stays the first
    assert loaded.position() == "epoch 3, step 0 (global step 7)"


def test_trainer_state_from_an_empty_dict_is_a_fresh_run():
    assert TrainerState.from_dict({}) == TrainerState()
    assert TrainerState().best_row() == {}


@pytest.mark.parametrize(("scheduler", "interval"), [("cosine", SchedulerInterval.STEP),
                                                     ("plateau", SchedulerInterval.EPOCH), ("none", None)])
def test_the_schedule_says_when_the_trainer_steps_it(scheduler, interval):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = TrainConfig(scheduler=scheduler, epochs=2, warmup=1)
    assert build_scheduler(optimizer, cfg, steps_per_epoch=3)[1] is interval


def test_a_classifier_resolves_its_checkpoint_reference_once(tmp_path, monkeypatch):
    import clipmg.checkpoint.folders as folders
    import clipmg.inference.classifier as classifier_module
    from clipmg.inference import Classifier

    model = create_model("openclip:clipmg-tiny", image_size=32)
    fields = {k: v for k, v in TRAINER_CONFIG.items() if k not in ("format_version", "model")}
    save_checkpoint(tmp_path / "run" / "best", model, fields)
    calls: list[Path] = []
    resolve = folders.resolve_checkpoint

    def counted(path):
        calls.append(Path(path))
        return resolve(path)

    monkeypatch.setattr(folders, "resolve_checkpoint", counted)
    monkeypatch.setattr(classifier_module, "resolve_checkpoint", counted)
    loaded = Classifier.from_checkpoint(tmp_path / "run", device="cpu")
    assert calls == [tmp_path / "run"]
    assert loaded.checkpoint == tmp_path / "run" / "best" and loaded.record.epoch == 2
