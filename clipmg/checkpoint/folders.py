"""Checkpoint folders: written atomically, resolved from a folder, a run or a Hub reference.

A checkpoint is a folder holding ``model.safetensors`` and ``config.json`` (everything needed to
rebuild the model and classify), its model card ``README.md`` (generated from config.json), plus
``trainer_state.pt`` when a run can resume from it. Folders are written beside their
destination and renamed into place, so a kill during a save leaves the previous checkpoint
whole. Nothing in a checkpoint can run code when loaded.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from clipmg.checkpoint.card import CARD, model_card
from clipmg.checkpoint.hub import download_checkpoint, is_hub_reference
from clipmg.checkpoint.record import FORMAT_VERSION, CheckpointRecord, as_record
from clipmg.errors import CheckpointError
from clipmg.outputs import check_output_folder, output_errors, write_failed

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"


def save_checkpoint(folder: str | Path, model: torch.nn.Module, config: CheckpointRecord | Mapping,
                    trainer_state: dict | None = None, extra_writers=()) -> Path:
    """Write ``model``'s weights, ``config`` (a record, or the dict of one) with the model's own
    config and the model card made from it (plus trainer state) to ``folder`` atomically. Each of
    ``extra_writers`` is called with the staging folder to add its own files (e.g. the learned
    prompt context, ``prompt_learner.safetensors``)."""
    record = dataclasses.replace(as_record(config), format_version=FORMAT_VERSION, model=model.model_config)
    folder = check_output_folder(folder, "checkpoint")
    kept = (f"the previous checkpoint in {folder} is untouched" if (folder / WEIGHTS).is_file()
            else "no checkpoint was written")
    with output_errors(folder, kept):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_unshare(state), staging / WEIGHTS)
        if hasattr(model, "save_pretrained_parts"):
            model.save_pretrained_parts(staging)
        text = json.dumps(record.to_json_dict(), indent=2, default=str)
        (staging / CONFIG).write_text(text, encoding="utf-8")
        (staging / CARD).write_text(model_card(json.loads(text), name=folder.name), encoding="utf-8")
        if trainer_state is not None:
            torch.save(trainer_state, staging / TRAINER_STATE)
        for write in extra_writers:
            write(staging)
        _replace_folder(staging, folder)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_failed(folder, error, kept) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): give each its own copy."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def _replace_folder(staging: Path, folder: Path) -> None:
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    try:
        staging.rename(folder)
    except OSError:
        if old.exists() and not folder.exists():
            old.rename(folder)  # the previous checkpoint back in its place
        raise
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder or a run folder (then its ``best/``, else ``last/``), local or
    on the Hugging Face Hub (``hf-hub:org/name[/subfolder][@revision]``, through the cache)."""
    path = download_checkpoint(path) if is_hub_reference(path) else Path(path)
    if path.is_file():
        raise CheckpointError(
            f"checkpoint {path} is a file: a clipmg checkpoint is a folder holding {WEIGHTS} and {CONFIG} (a run's "
            f"best/ or last/). A state dict of the original project's CLIPModel converts with `clipmg import --from "
            f"{path} --out FOLDER --labels Clip_label.csv`"
        )
    if (path / CONFIG).is_file():
        return path
    for child in ("best", "last"):
        if (path / child / CONFIG).is_file():
            return path / child
    # A kill between the two renames of _replace_folder leaves only the .old copy.
    old = path.with_name(f".{path.name}.old")
    if (old / CONFIG).is_file() and (old / WEIGHTS).is_file():
        return old
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist. Train one with `clipmg train --output {path.parent / 'run'}` "
            "(or `clipmg demo`), or point --checkpoint at a folder holding model.safetensors and config.json."
        )
    raise CheckpointError(
        f"checkpoint {path} is incomplete: it needs {CONFIG} and {WEIGHTS} (or best/ or last/ "
        f"subfolders holding them); found {sorted(p.name for p in path.iterdir()) or 'nothing'}"
    )


def read_checkpoint_config(path: str | Path) -> dict:
    """The parsed config.json of the checkpoint `path` names (resolved as `resolve_checkpoint` does)."""
    return _read_config_json(resolve_checkpoint(path))


def read_record(folder: Path) -> CheckpointRecord:
    """The record of a folder `resolve_checkpoint` returned."""
    return CheckpointRecord.from_json_dict(_read_config_json(folder))


def _read_config_json(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder / CONFIG} is not valid JSON: {exc}") from exc


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint. Returns ``(model, config)``, config the parsed
    config.json; the model is in eval mode."""
    model, record = load_checkpoint_folder(resolve_checkpoint(path), device)
    return model, record.to_json_dict()


def load_checkpoint_folder(folder: Path, device: str | torch.device = "cpu"):
    """`load_checkpoint` of a folder `resolve_checkpoint` returned (resolved once by the caller,
    which keeps the folder): ``(model, CheckpointRecord)``."""
    from clipmg.models import create_model_from_config

    config = _read_config_json(folder)
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"checkpoint {folder} has no {WEIGHTS}: it was not fully written. Point "
                              "--checkpoint at a run's best/ or last/ folder, or train one with `clipmg train`.")
    for key in ("model", "class_ids", "class_names"):
        if key not in config:
            raise CheckpointError(f"{folder / CONFIG} lacks '{key}'; was it written by clipmg?")
    model = create_model_from_config(config["model"], folder=folder)
    load_weights(model, folder / WEIGHTS)
    model.to(device).eval()
    return model, CheckpointRecord.from_json_dict(config)


def load_weights(model: torch.nn.Module, weights_file: Path) -> None:
    try:
        state = load_file(str(weights_file))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read {weights_file}: {exc}") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_file} does not fit the model in its config.json "
            f"(missing {len(missing)} keys e.g. {missing[:3]}, unexpected {len(unexpected)} e.g. {unexpected[:3]}); "
            "was the checkpoint written by another backend or model?"
        )


def load_trainer_state(path: str | Path) -> dict:
    folder = resolve_checkpoint(path)
    state_file = folder / TRAINER_STATE
    if not state_file.is_file():
        raise CheckpointError(f"{folder} has no {TRAINER_STATE}: it cannot be resumed, only fine-tuned "
                              "from (use --init-from)")
    return torch.load(state_file, map_location="cpu", weights_only=True)
