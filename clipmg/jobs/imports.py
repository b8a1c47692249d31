"""`clipmg import`: a checkpoint from elsewhere as a clipmg checkpoint folder.

Recognised: a state dict of the original contrastive project's ``CLIPModel`` (the "simple CLIP"
recipe): ``image_encoder.model.*`` a timm image encoder (pooled, no classifier),
``text_encoder.model.*`` a DistilBERT-style Hugging Face encoder read at its CLS token, and
``image_projection.*`` / ``text_projection.*`` projection heads (linear, GELU, linear, dropout,
residual, LayerNorm). That is clipmg's `hybrid` model with CLS pooling and the same
`ProjectionHead`, so the weights carry over one to one and the converted model scores as the
original did (normalised embeddings, dot product over the temperature).

Files are read without running code: safetensors, or ``torch.load(weights_only=True)``, which
refuses any pickle that names something other than tensors and plain containers.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

from clipmg import data as cdata
from clipmg.checkpoint import CheckpointRecord, save_checkpoint
from clipmg.errors import CheckpointError, ModelError
from clipmg.models.hybrid import (
    IMAGE_PREFIX,
    TEXT_PREFIX,
    HybridModel,
    create_image_encoder,
    create_text_encoder,
    image_preprocess,
    load_tokenizer,
    strip_prefix,
)
from clipmg.prompts import load_prompt_set
from clipmg.utils import logger

STATE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
PARTS = {"image_encoder.model.": "image_encoder.", "text_encoder.model.": "text_encoder.",
         "image_projection.": "image_projection.", "text_projection.": "text_projection."}
# The original project's default encoders, then other common timm towers, tried in this order
# when --image-encoder is not given: the first whose parameter names and shapes all match.
IMAGE_CANDIDATES = ["resnet50", "resnet18", "resnet34", "resnet101", "resnet152", "efficientnet_b0",
                    "vit_base_patch16_224", "convnext_tiny"]
DEFAULT_TEXT = "hf:distilbert-base-uncased"
ORIGINAL_TEMPERATURE = 1.0  # the simple-CLIP recipe's fixed temperature
ORIGINAL_CONTEXT = 200  # and its tokenizer's max_length
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
HOW = ("a clipmg checkpoint is a folder holding model.safetensors and config.json (a run's best/ or last/); "
       "a state dict of the original project's CLIPModel converts with `clipmg import --from FILE --out FOLDER "
       "--labels Clip_label.csv`")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of `path` (safetensors, or a torch file read with weights_only=True)."""
    path = Path(path)
    if path.suffix.lower() not in STATE_SUFFIXES:
        raise CheckpointError(f"{path} is a file, not a checkpoint: {HOW}")
    try:
        if path.suffix.lower() == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        reason = next((line for line in lines if "global" in line.lower()), lines[0]).split(". Please")[0][:200]
        raise CheckpointError(f"{path} refused: it holds Python objects beyond tensors, which clipmg never loads "
                              f"(nothing in it ran; {reason}); {HOW}") from error
    except Exception as error:  # a damaged or foreign file: torch and safetensors raise many types
        raise CheckpointError(f"cannot read {path} as a state dict ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200] if str(error) else ''}); {HOW}") from error
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict (names to tensors); {HOW}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_original_clip(state: dict) -> bool:
    return all(any(k.startswith(prefix) for k in state) for prefix in PARTS)


def _part(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _shapes(state: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def guess_image_encoder(image_state: dict, source: Path) -> str:
    """The first of IMAGE_CANDIDATES whose parameters have the state dict's names and shapes."""
    import timm

    wanted = _shapes(image_state)
    for name in IMAGE_CANDIDATES:
        with torch.device("meta"):
            encoder = timm.create_model(name, pretrained=False, num_classes=0)
        if _shapes(encoder.state_dict()) == wanted:
            return f"{IMAGE_PREFIX}{name}"
    raise CheckpointError(f"cannot tell which timm model the image encoder of {source} is (none of "
                          f"{', '.join(IMAGE_CANDIDATES)} fits its {len(wanted)} tensors); name it with "
                          "`clipmg import --image-encoder timm:NAME`")


def _load_part(module: torch.nn.Module, state: dict, what: str, spec: str, source: Path) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes differ
        detail = " ".join(str(error).split())[:240]
        raise CheckpointError(f"the {what} of {source} does not fit {spec}: {detail}; name the right one with "
                              f"--{what.replace(' ', '-')} ") from error
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    if missing or unexpected:
        raise CheckpointError(f"the {what} of {source} does not fit {spec} (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}); name the right one with --{what.replace(' ', '-')}")


def convert_original(source: str | Path, out: str | Path, labels: str | Path, image: str | None = None,
                     text: str | None = None, prompts: str | None = None, temperature: float = ORIGINAL_TEMPERATURE,
                     image_size: int | None = None, state: dict | None = None) -> Path:
    """Convert the original project's CLIPModel state dict in `source` into a hybrid checkpoint
    folder `out` classifying the classes of `labels` (Clip_label.csv). `image` (timm:NAME) is
    guessed from the tensors when not given; `text` (hf:NAME_OR_FOLDER, where its config and
    tokenizer are found offline or downloaded) defaults to the original's DistilBERT."""
    source = Path(source)
    state = read_state_dict(source) if state is None else state
    if not is_original_clip(state):
        raise CheckpointError(f"{source} is not a state dict clipmg knows: it lacks "
                              + ", ".join(f"{p}*" for p in PARTS if not any(k.startswith(p) for k in state))
                              + f"; {HOW}")
    class_table = cdata.load_labels(labels)
    image_state, text_state = _part(state, "image_encoder.model."), _part(state, "text_encoder.model.")
    image = image or guess_image_encoder(image_state, source)
    text = text or DEFAULT_TEXT
    text_source = strip_prefix(text, TEXT_PREFIX, "text")
    image_encoder = create_image_encoder(strip_prefix(image, IMAGE_PREFIX, "image"), False)
    _load_part(image_encoder, image_state, "image encoder", image, source)
    text_encoder = create_text_encoder(text_source, False)
    _load_part(text_encoder, text_state, "text encoder", text, source)
    embed_dim = state["image_projection.projection.weight"].shape[0]
    model = HybridModel(image_encoder, text_encoder, load_tokenizer(text_source), image=image, text=text,
                        embed_dim=int(embed_dim), pooling="cls", context_length=ORIGINAL_CONTEXT,
                        temperature=temperature, learn_temperature=True,
                        preprocess=image_preprocess(image_encoder, image_size),
                        provenance={"image_pretrained": False, "text_pretrained": False, "imported_from": str(source)})
    try:
        model.image_projection.load_state_dict(_part(state, "image_projection."))
        model.text_projection.load_state_dict(_part(state, "text_projection."))
    except RuntimeError as error:
        raise CheckpointError(f"the projection heads of {source} are not linear, GELU, linear, dropout, "
                              f"LayerNorm heads: {' '.join(str(error).split())[:240]}") from error
    prompt_set = load_prompt_set(prompts)
    record = CheckpointRecord(class_ids=list(class_table), class_names=list(class_table.values()),
                              prompts=prompt_set.to_dict(), preprocess=model.preprocess_config,
                              imported={"from": str(source), "format": "original CLIPModel state dict"})
    logger.info("imported %s: %s + %s, %d classes", source, image, text, len(class_table))
    return save_checkpoint(out, model.eval(), record)


def converted_folder(source: str | Path) -> Path:
    """Where a file given as --checkpoint / --init-from is converted on the fly: beside it."""
    source = Path(source)
    return source.with_name(f"{source.name}.clipmg")


def checkpoint_from_file(source: str | Path, labels: str | Path | None) -> tuple[Path, bool]:
    """A checkpoint folder for a file given where a folder is wanted: its converted folder
    (reused when newer than the file), converted now if need be. Returns (folder, converted now)."""
    source = Path(source)
    folder = converted_folder(source)
    if (folder / "config.json").is_file() and folder.stat().st_mtime >= source.stat().st_mtime:
        return folder, False
    state = read_state_dict(source)
    if not is_original_clip(state):
        raise CheckpointError(f"{source} is a file, not a checkpoint, and not a state dict clipmg can convert; {HOW}")
    if labels is None:
        raise CheckpointError(f"{source} is the original project's CLIPModel state dict; converting it needs the "
                              f"classes: give --labels Clip_label.csv, or run `clipmg import --from {source} --out "
                              "FOLDER --labels Clip_label.csv`")
    try:
        return convert_original(source, folder, labels, state=state), True
    except ModelError as error:
        raise CheckpointError(f"{error} (or convert {source} with `clipmg import --image-encoder timm:NAME "
                              "--text-encoder hf:NAME_OR_FOLDER`)") from error
