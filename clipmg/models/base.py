"""`ContrastiveModel`: the one interface every backend (open_clip, hybrid timm + HF) offers.

Downstream code (prompts, losses, trainer, checkpoint, predict) only uses what is defined here:

- `encode_image(images, normalize=True)` -> (B, D); `encode_text(texts, normalize=True)` -> (N, D),
  texts are plain strings, tokenised inside on the model's device.
- `logit_scale`: log of the inverse temperature. A learnable `nn.Parameter`, or, for a fixed
  temperature, a buffer (so no optimizer or `requires_grad_(True)` can move it). Same state_dict
  key either way. `scale()` returns `exp(logit_scale)` clamped at 100.
- `forward(images, texts)` -> `(image_features, text_features, scale)`, features L2-normalised.
- `model_config`: JSON-able dict, `create_model_from_config(model_config)` rebuilds the architecture
  without downloading anything (weights then come from the checkpoint).
- `preprocess_config`: `{"image_size": int, "mean": [3], "std": [3], "interpolation": str}`.
- `freeze(image, text)`, `param_groups(lr_image, lr_text, lr_heads, weight_decay)`.
- Fine-tuning tools: `layer_ids()` (each tower parameter's depth, for layer-wise learning-rate
  decay), `set_grad_checkpointing(enable)`.
- `save_pretrained_parts(folder)`: the checkpoint writer calls it after saving `model.safetensors`
  and `config.json`; a backend writes there whatever besides weights and `model_config` it needs to
  be rebuilt offline (the hybrid backend: its HF tokenizer in `folder/tokenizer/`). It returns the
  paths written. `create_model_from_config(cfg, folder)` reads them back.

Every parameter belongs to one *part*: "image" (image tower), "text" (text tower) or "heads" (the
projections into the shared space, and the learnable `logit_scale`). Parts drive `freeze` and
`param_groups`. A later modality (e.g. pose) adds its own part and encoder in a subclass.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipmg.errors import ModelError
from clipmg.models.layers import numbered_layer_ids, timm_layer_ids

MAX_LOGIT_SCALE = 100.0
DEFAULT_TEMPERATURE = 0.07

IMAGE, TEXT, HEADS = "image", "text", "heads"
#: where a tower's weights came from when the model was created (`tower_origins`); the training
#: recipe (clipmg.training.recipes) picks its learning rate from this
RANDOM, CLIP_WEIGHTS, IMAGENET_WEIGHTS, LANGUAGE_MODEL_WEIGHTS = "random", "clip", "imagenet", "language_model"


def resolve_temperature(
    temperature: float | None, learn_temperature: bool | None, default: float = DEFAULT_TEMPERATURE
) -> tuple[float, bool]:
    """(temperature, learnable). No temperature: start at `default`, learnable unless told not to.
    A given temperature is fixed unless `learn_temperature=True` (then it is the starting value)."""
    if temperature is None:
        return default, True if learn_temperature is None else bool(learn_temperature)
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ModelError(f"temperature must be a positive number, got {temperature!r}")
    return temperature, bool(learn_temperature)


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights and scalars (logit_scale) get no weight decay: all have ndim <= 1."""
    return param.ndim <= 1


class ContrastiveModel(nn.Module, metaclass=ABCMeta):
    """Base class of clipmg models. Subclasses set `backend`, build their towers, then call
    `_init_logit_scale` and set `model_config` and `preprocess_config`."""

    backend: str = ""
    #: Batch keys besides "image" that `encode_image` takes as keyword arguments (e.g. a pose
    #: model's "keypoints"); datasets attach them to each item and callers pass them through
    #: `model_extras(model, batch)`.
    extra_inputs: tuple[str, ...] = ()
    #: True for models that score classes with their own head (supervised baselines, trained
    #: with classification losses); False for models scored against class text embeddings.
    has_classifier_head: bool = False
    #: False for models whose per-frame inputs are image positions that random crops, rotations
    #: and flips would move away from (hand boxes): they train on uncropped frames.
    geometric_augmentation: bool = True
    #: how a name of this backend reads (in errors) and the `ModelSpec` settings it reads
    #: (`registry.unread_settings` refuses the others by name)
    name_pattern: str = ""
    spec_settings: tuple[str, ...] = ()

    @classmethod
    def options_from_spec(cls, spec) -> dict[str, Any]:
        """The `create_named` options of a `clipmg.models.ModelSpec`: the settings the backend
        reads, as they are (a backend that translates them overrides this)."""
        return {name: getattr(spec, name) for name in cls.spec_settings}

    def __init__(self) -> None:
        super().__init__()
        self.model_config: dict[str, Any] = {}
        self.preprocess_config: dict[str, Any] = {}
        self.frozen_parts: set[str] = set()
        #: settings the loaders of `extra_inputs` read (keypoint cache folder, hand margin);
        #: part of `model_config`, so test.py computes the inputs as training did
        self.input_settings: dict[str, Any] = {}
        #: per tower part, where its weights came from at creation (RANDOM, CLIP_WEIGHTS, ...)
        self.tower_origins: dict[str, str] = {IMAGE: RANDOM, TEXT: RANDOM}

    # --- construction -------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: dict, folder: str | Path | None = None) -> ContrastiveModel:
        """Rebuild the architecture from `model_config` (no pretrained weights, no downloads)."""

    @classmethod
    def check_config_backend(cls, cfg: dict) -> None:
        backend = cfg.get("backend") if isinstance(cfg, dict) else None
        if backend != cls.backend:
            raise ModelError(
                f"model_config is for backend {backend!r}, not {cls.backend!r}; "
                "rebuild it with clipmg.models.create_model_from_config"
            )

    def _init_logit_scale(self, temperature: float, learnable: bool) -> None:
        value = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        if learnable:
            self.logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("logit_scale", value)

    def save_pretrained_parts(self, folder: str | Path) -> list[Path]:
        """Write what is needed, besides weights and `model_config`, to rebuild offline."""
        return []

    # --- encoding -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @abstractmethod
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) float images, already normalised with `preprocess_config` -> (B, D)."""

    @abstractmethod
    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """List of N strings -> (N, D)."""

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(
        self, images: torch.Tensor, texts: list[str], **extras: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(images, **extras), self.encode_text(texts), self.scale()

    # --- scoring: class_logits = logits_from_features(scoring_features(images)) -------------------

    def scoring_features(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """What `class_logits` scores, computed once per image so that several class tables
        (prompt sets) or views (the projector) reuse it: here the (B, D) normalised image
        embeddings. Wrappers return their own shape (hand crops: one row per candidate)."""
        return self.encode_image(images, normalize=True, **extras)

    def logits_from_features(self, features: torch.Tensor, class_embeddings: torch.Tensor | None) -> torch.Tensor:
        """(B, C) float32 logits from `scoring_features`: `scale * features @ class_embeddings.T`."""
        if class_embeddings is None:
            raise ModelError(f"{type(self).__name__} scores classes against class embeddings; none given")
        return self.scale().float() * features.float() @ class_embeddings.float().T

    def embedding_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised image embeddings (maps, projector, probes) from `scoring_features`."""
        return features

    def class_logits(
        self, images: torch.Tensor, class_embeddings: torch.Tensor | None, **extras: torch.Tensor
    ) -> torch.Tensor:
        """(B, C) float32 logits: the one scoring rule of validation, predict, evaluate, prompt
        experiments and test.py. Models with their own classifier head ignore `class_embeddings`."""
        return self.logits_from_features(self.scoring_features(images, **extras), class_embeddings)

    # --- training helpers -----------------------------------------------------------------------

    @abstractmethod
    def parameter_part(self, name: str) -> str:
        """IMAGE, TEXT or HEADS for a name from `named_parameters()` (or a module name + '.weight')."""

    def freeze(self, image: bool = False, text: bool = False) -> None:
        """Lock the image and/or text tower (`requires_grad=False`, BatchNorm statistics kept
        fixed); heads always train. `freeze(False, False)` unlocks both towers again."""
        self.frozen_parts = {part for part, frozen in ((IMAGE, image), (TEXT, text)) if frozen}
        for name, param in self.named_parameters():
            param.requires_grad_(self.parameter_part(name) not in self.frozen_parts)
        self.train(self.training)

    def train(self, mode: bool = True) -> ContrastiveModel:
        super().train(mode)
        # A frozen tower's BatchNorm must not drift with the new data's statistics.
        for name, module in self.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
                self.parameter_part(f"{name}.weight") in self.frozen_parts
            ):
                module.eval()
        return self

    def param_groups(
        self,
        lr_image: float = 1e-4,
        lr_text: float = 1e-5,
        lr_heads: float = 1e-3,
        weight_decay: float = 0.01,
    ) -> list[dict[str, Any]]:
        """AdamW parameter groups: one learning rate per part, no weight decay on parameters with
        ndim <= 1 (biases, norms, logit_scale). Frozen parameters and empty groups are left out;
        each group has a "name" (e.g. "image", "image_no_decay") for logging."""
        lrs = {IMAGE: lr_image, TEXT: lr_text, HEADS: lr_heads}
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if param.requires_grad:
                key = (self.parameter_part(name), is_no_decay(name, param))
                groups.setdefault(key, []).append(param)
        return [
            {
                "name": f"{part}_no_decay" if no_decay else part,
                "params": params,
                "lr": lrs[part],
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
            for (part, no_decay), params in sorted(groups.items())
        ]


    # --- fine-tuning tools ----------------------------------------------------------------------

    def timm_modules(self) -> dict[str, nn.Module]:
        """The towers that are timm models, by the prefix of their parameter names (timm groups
        their layers itself)."""
        return {}

    def layer_ids(self) -> dict[str, tuple[int, int]]:
        """(layer, number of layers of its tower) for each image and text tower parameter, layer 0
        nearest the input (see clipmg.models.layers); heads are not listed."""
        timm_towers = self.timm_modules()
        ids: dict[str, tuple[int, int]] = {}
        for prefix, module in timm_towers.items():
            ids.update(timm_layer_ids(module, prefix))
        for part in (IMAGE, TEXT):
            params = [(n, p) for n, p in self.named_parameters()
                      if self.parameter_part(n) == part and not n.startswith(tuple(timm_towers))]
            found = numbered_layer_ids(n for n, _ in params)
            if not found and any(p.requires_grad for _, p in params):
                raise ModelError(f"layer-wise learning-rate decay: the {part} tower of "
                                 f"{self.model_config.get('name', type(self).__name__)} has no numbered blocks "
                                 "to decay over; train it without --layer-decay")
            ids.update(found)
        return {name: value for name, value in ids.items() if self.parameter_part(name) != HEADS}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the towers' activations in the backward pass instead of keeping them."""
        raise ModelError(f"{self.model_config.get('name', type(self).__name__)} does not support gradient "
                         "checkpointing; train it without --grad-checkpointing")


class InnerModelWrapper(ContrastiveModel):
    """A model around another (`self.inner`) that keeps its text tower, logit scale and saved
    parts; the wrapper's own parameters are "heads"."""

    def save_pretrained_parts(self, folder: str | Path) -> list[Path]:
        return self.inner.save_pretrained_parts(folder)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.inner.logit_scale

    def scale(self) -> torch.Tensor:
        return self.inner.scale()

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        return self.inner.encode_text(texts, normalize=normalize)

    def parameter_part(self, name: str) -> str:
        if name.startswith("inner."):
            return self.inner.parameter_part(name[len("inner."):])
        return HEADS


class ImageSideWrapper(InnerModelWrapper):
    """A model around a plain image-text model (`self.inner`) that changes only the image side
    (pose fusion, hand crops)."""

    wrapper_name = "this wrapper"

    def __init__(self, inner: ContrastiveModel):
        super().__init__()
        if inner.has_classifier_head:
            raise ModelError(f"{self.wrapper_name} wraps a model scored against class prompts; "
                             f"{type(inner).__name__} has its own classifier head")
        if inner.extra_inputs:
            raise ModelError(f"{self.wrapper_name} wraps a plain image-text model; {type(inner).__name__} "
                             f"already takes {', '.join(inner.extra_inputs)}")
        self.inner = inner

    @property
    def tower_origins(self) -> dict[str, str]:
        return self.inner.tower_origins

    @tower_origins.setter
    def tower_origins(self, value: dict[str, str]) -> None:
        pass  # the towers are the inner model's

    def timm_modules(self) -> dict[str, nn.Module]:
        return {f"inner.{prefix}": module for prefix, module in self.inner.timm_modules().items()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.inner.set_grad_checkpointing(enable)


def model_extras(model: ContrastiveModel, batch: dict, device: torch.device | None = None) -> dict:
    """The batch entries `model.extra_inputs` names, moved to `device`."""
    model = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    missing = [key for key in model.extra_inputs if batch.get(key) is None]
    if missing:
        raise ModelError(f"{type(model).__name__} needs {', '.join(missing)} for every frame, and the batch "
                         "has none; build the dataset with the model's extra fields")
    return {key: batch[key].to(device, non_blocking=True) if device is not None else batch[key]
            for key in model.extra_inputs}
