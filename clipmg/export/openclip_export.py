"""`clipmg export --format open_clip`: an `openclip:` checkpoint as open_clip's own files.

The folder written is a clipmg checkpoint (model.safetensors, config.json, README.md) and an
open_clip model at once: `open_clip_model.safetensors` (the open_clip CLIP's state dict) and
`<name>.json` (its model config, with the image size and context length the checkpoint uses),
so that after `open_clip.add_model_config("<folder>/<name>.json")`,
`open_clip.create_model_and_transforms("<name>", pretrained="<folder>/open_clip_model.safetensors")`
rebuilds it; and `open_clip_config.json` (model and preprocessing config), the layout
`open_clip.create_model_and_transforms("local-dir:<folder>")` and, once pushed,
`"hf-hub:org/name"` read. clipmg keeps its own logit scale (open_clip's is unused inside
clipmg); it is written as open_clip's `logit_scale`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import torch

from clipmg.checkpoint import load_checkpoint_folder, resolve_checkpoint, save_checkpoint
from clipmg.errors import ModelError

WEIGHTS = "open_clip_model.safetensors"
HUB_CONFIG = "open_clip_config.json"


def open_clip_model_config(model) -> dict:
    """open_clip's model config of a clipmg `OpenClipModel`, with the sizes it was built with."""
    import open_clip

    from clipmg.models.openclip import register_model_configs

    register_model_configs()
    cfg = model.model_config
    base = open_clip.get_model_config(cfg["model_name"])
    if base is None:
        raise ModelError(f"open_clip has no config for {cfg['model_name']!r}; cannot write one for it")
    base = copy.deepcopy(base)
    base["vision_cfg"]["image_size"] = cfg["image_size"]
    base["text_cfg"]["context_length"] = int(cfg["context_length"])
    return base


def open_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """The open_clip CLIP's weights, with clipmg's logit scale as its `logit_scale`."""
    state = {key: value.detach().cpu().contiguous() for key, value in model.clip.state_dict().items()}
    state["logit_scale"] = model.logit_scale.detach().float().cpu().reshape(())
    return state


def preprocess_cfg(preprocess: dict) -> dict:
    size = preprocess["image_size"]
    return {"size": size, "mean": list(preprocess["mean"]), "std": list(preprocess["std"]),
            "interpolation": preprocess.get("interpolation", "bicubic"), "resize_mode": "shortest"}


def export_open_clip(checkpoint: str | os.PathLike, out: str | os.PathLike, name: str | None = None) -> dict:
    """Write `checkpoint` (an `openclip:` model) as an open_clip model folder `out` (see the
    module's doc). Returns out, name, files, and the open_clip calls that load it."""
    from safetensors.torch import save_file

    source = resolve_checkpoint(checkpoint)
    model, record = load_checkpoint_folder(source)
    if model.model_config.get("backend") != "openclip":
        raise ModelError(f"{source} holds a {model.model_config.get('name')} model; the open_clip export is for "
                         "plain openclip: checkpoints (no linear head, pose fusion or hand crops). "
                         "Use --format onnx for the others.")
    name = name or model.model_config["model_name"]
    if "/" in name or name.startswith(("hf-hub:", "local-dir:")):
        raise ModelError(f"--name {name!r}: a plain model name is needed for the open_clip config file")
    model_cfg = open_clip_model_config(model)
    state = open_clip_state_dict(model)

    def write_open_clip(staging: Path) -> None:
        save_file(state, str(staging / WEIGHTS))
        (staging / f"{name}.json").write_text(json.dumps(model_cfg, indent=2) + "\n", encoding="utf-8")
        hub = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg(model.preprocess_config)}
        (staging / HUB_CONFIG).write_text(json.dumps(hub, indent=2) + "\n", encoding="utf-8")

    kept = dataclasses.replace(record, open_clip={"name": name, "weights": WEIGHTS, "config": f"{name}.json",
                                                  "source": str(source)})
    folder = save_checkpoint(out, model, kept, extra_writers=[write_open_clip])
    return {"out": str(folder), "name": name, "files": [WEIGHTS, f"{name}.json", HUB_CONFIG],
            "load": open_clip_usage(folder, name)}


def open_clip_usage(folder: str | os.PathLike, name: str) -> str:
    folder = Path(folder)
    return (f"open_clip.add_model_config({str(folder / f'{name}.json')!r})\n"
            f"model, _, preprocess = open_clip.create_model_and_transforms({name!r}, "
            f"pretrained={str(folder / WEIGHTS)!r})\n"
            f"# or: open_clip.create_model_and_transforms('local-dir:{folder}')")
