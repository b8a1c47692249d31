"""Checkpoint folders: the unit of exchange between train, predict, evaluate, prompts and embed.

A checkpoint is a folder holding ``model.safetensors``, ``config.json`` and a model card
(``README.md``, generated from config.json), plus ``trainer_state.pt`` when a run can resume
from it (`folders`); config.json holds a `CheckpointRecord` (`record`). Wherever a checkpoint
path is accepted, ``hf-hub:org/name`` names a Hugging Face Hub repository holding one, resolved
through the local cache (`hub`).
"""

from clipmg.checkpoint.card import CARD, model_card, write_model_card
from clipmg.checkpoint.folders import (
    CONFIG,
    TRAINER_STATE,
    WEIGHTS,
    load_checkpoint,
    load_checkpoint_folder,
    load_trainer_state,
    load_weights,
    read_checkpoint_config,
    read_record,
    resolve_checkpoint,
    save_checkpoint,
)
from clipmg.checkpoint.hub import (
    HUB_PREFIX,
    download_checkpoint,
    hub_cache_name,
    is_hub_reference,
    parse_hub_reference,
    push_folder,
)
from clipmg.checkpoint.record import FORMAT_VERSION, CheckpointRecord, as_record

__all__ = [
    "CARD",
    "CONFIG",
    "CheckpointRecord",
    "FORMAT_VERSION",
    "HUB_PREFIX",
    "TRAINER_STATE",
    "WEIGHTS",
    "as_record",
    "download_checkpoint",
    "hub_cache_name",
    "is_hub_reference",
    "load_checkpoint",
    "load_checkpoint_folder",
    "load_trainer_state",
    "load_weights",
    "model_card",
    "parse_hub_reference",
    "push_folder",
    "read_checkpoint_config",
    "read_record",
    "resolve_checkpoint",
    "save_checkpoint",
    "write_model_card",
]
