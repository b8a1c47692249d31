"""`hybrid` backend: a timm image encoder and a Hugging Face text encoder, each followed by a
`ProjectionHead` into a shared space (the original project's model).

    create_model("hybrid", image="timm:resnet50", text="hf:distilbert-base-uncased",
                 embed_dim=256, temperature=0.05)

Parts (see base.py): `image_encoder` is "image", `text_encoder` is "text", the two projection
heads and a learnable `logit_scale` are "heads".

Rebuilding offline: `model_config` holds the HF config dict (architecture), and
`save_pretrained_parts(folder)` writes the tokenizer to `folder/tokenizer/`; the timm encoder is
rebuilt by name without weights.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
from torch import nn

from clipmg.errors import ModelError
from clipmg.models.base import (
    HEADS,
    IMAGE,
    IMAGENET_WEIGHTS,
    LANGUAGE_MODEL_WEIGHTS,
    RANDOM,
    TEXT,
    ContrastiveModel,
    resolve_temperature,
)
from clipmg.models.heads import ProjectionHead
from clipmg.models.registry import register_backend
from clipmg.models.spec import ModelSpec, wants_pretrained

IMAGE_PREFIX, TEXT_PREFIX = "timm:", "hf:"
POOLINGS = ("cls", "mean")
TOKENIZER_DIR = "tokenizer"


def strip_prefix(spec: str, prefix: str, what: str) -> str:
    if not isinstance(spec, str) or not spec.startswith(prefix) or len(spec) == len(prefix):
        raise ModelError(f"{what} encoder must be given as '{prefix}<name>', got {spec!r}")
    return spec[len(prefix) :]


# --- image encoder (timm) ---------------------------------------------------------------------


def check_timm_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown timm model {name!r}.{hint} See timm.list_models().")


def create_image_encoder(name: str, pretrained: bool | str) -> nn.Module:
    """timm model without classifier (pooled features). `pretrained`: True (timm's default
    weights, downloaded), False, or a local weights file."""
    check_timm_name(name)
    kwargs: dict[str, Any] = {"pretrained": bool(pretrained), "num_classes": 0}
    if isinstance(pretrained, str):
        if not Path(pretrained).is_file():
            raise ModelError(f"image encoder weights file not found: {pretrained}")
        kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained)}
    try:
        return timm.create_model(name, **kwargs)
    except (OSError, RuntimeError) as error:
        raise ModelError(
            f"could not load pretrained weights for timm model {name!r}: {error}. Without "
            "internet, download the weights once and pass the file path as image_pretrained."
        ) from error


def image_preprocess(encoder: nn.Module, image_size: int | None) -> dict[str, Any]:
    data_cfg = timm.data.resolve_model_data_config(encoder)
    return {
        "image_size": int(image_size or data_cfg["input_size"][-1]),
        "mean": [float(v) for v in data_cfg["mean"]],
        "std": [float(v) for v in data_cfg["std"]],
        "interpolation": data_cfg.get("interpolation", "bicubic"),
    }


# --- text encoder (Hugging Face) --------------------------------------------------------------


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists() or source.startswith(("/", "./", "../", "~"))


def _load_hf(loader, source: str, what: str, **kwargs):
    if _is_local(source) and not Path(source).expanduser().is_dir():
        raise ModelError(f"text encoder folder not found: {source}")
    try:
        return loader(str(Path(source).expanduser()) if _is_local(source) else source, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelError(
            f"could not load the Hugging Face {what} {source!r}: {error}. Without internet, "
            "save the model once (save_pretrained) and pass its local folder as text='hf:<folder>'."
        ) from error


def _drop_unused_pooler(model: nn.Module) -> nn.Module:
    # BERT-like models carry a pooler we never use (we pool last_hidden_state); its parameters
    # would get no gradient, which DistributedDataParallel rejects and AdamW would waste time on.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def _transformers():
    """The transformers package, imported when a hybrid model first needs it: it is a large import
    that no other model and no inference of an open_clip checkpoint needs."""
    import transformers

    return transformers


def create_text_encoder(source: str, pretrained: bool) -> nn.Module:
    if pretrained:
        return _drop_unused_pooler(_load_hf(_transformers().AutoModel.from_pretrained, source, "model"))
    config = _load_hf(_transformers().AutoConfig.from_pretrained, source, "config")
    return _drop_unused_pooler(_transformers().AutoModel.from_config(config))


def text_encoder_from_config(hf_config: dict) -> nn.Module:
    config = _transformers().AutoConfig.for_model(**hf_config)
    return _drop_unused_pooler(_transformers().AutoModel.from_config(config))


def hf_config_dict(model: nn.Module) -> dict:
    return json.loads(model.config.to_json_string(use_diff=False))


def load_tokenizer(source: str, local_files_only: bool = False):
    return _load_hf(
        _transformers().AutoTokenizer.from_pretrained, source, "tokenizer", local_files_only=local_files_only
    )


def set_hf_grad_checkpointing(model: nn.Module, enable: bool) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(f"the Hugging Face text encoder {type(model).__name__} has no gradient checkpointing")
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_disable()


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


# --- model ------------------------------------------------------------------------------------


@register_backend
class HybridModel(ContrastiveModel):
    backend = "hybrid"

    @classmethod
    def accepts(cls, name: str) -> bool:
        return name == cls.backend

    @classmethod
    def create_named(cls, name: str, pretrained: bool | None = None, **options) -> HybridModel:
        return cls.create(pretrained=pretrained, **options)

    name_pattern = "hybrid"
    spec_settings = ("pretrained", "image_size", "temperature", "learn_temperature", "image_encoder",
                     "text_encoder", "image_pretrained", "text_pretrained", "pooling", "embed_dim")

    @classmethod
    def options_from_spec(cls, spec: ModelSpec) -> dict[str, Any]:
        """The towers are pretrained only when `pretrained` says so; a tower's own setting wins."""
        options = {"image": spec.image_encoder or "timm:resnet50",
                   "text": spec.text_encoder or "hf:distilbert-base-uncased",
                   "pretrained": bool(wants_pretrained(spec.pretrained)), "pooling": spec.pooling,
                   "image_size": spec.image_size, "temperature": spec.temperature,
                   "learn_temperature": spec.learn_temperature}
        if spec.image_pretrained is not None:
            options["image_pretrained"] = wants_pretrained(spec.image_pretrained)
        if spec.text_pretrained is not None:
            options["text_pretrained"] = spec.text_pretrained
        if spec.embed_dim:
            options["embed_dim"] = spec.embed_dim
        return options

    list_order = 1

    @classmethod
    def model_names(cls) -> tuple[list[str], list[str]]:
        return [cls.backend], []

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        *,
        image: str,
        text: str,
        embed_dim: int = 256,
        pooling: str = "cls",
        dropout: float = 0.1,
        context_length: int = 77,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        preprocess: dict[str, Any],
        provenance: dict[str, Any] | None = None,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self._check_tokenizer(text)
        self.pooling = pooling
        self.context_length = min(
            int(context_length), getattr(text_encoder.config, "max_position_embeddings", 10**9)
        )
        self.image_projection = ProjectionHead(image_encoder.num_features, embed_dim, dropout)
        self.text_projection = ProjectionHead(text_encoder.config.hidden_size, embed_dim, dropout)
        self._init_logit_scale(temperature, learn_temperature)
        self.preprocess_config = dict(preprocess)
        self.model_config = {
            "backend": self.backend,
            "name": self.backend,
            "image": image,
            "text": text,
            **(provenance or {}),
            "embed_dim": int(embed_dim),
            "pooling": pooling,
            "dropout": float(dropout),
            "context_length": self.context_length,
            "temperature": temperature,
            "learn_temperature": learn_temperature,
            "hf_config": hf_config_dict(text_encoder),
            "preprocess": dict(preprocess),
        }

    @classmethod
    def create(
        cls,
        image: str = "timm:resnet50",
        text: str = "hf:distilbert-base-uncased",
        pretrained: bool | None = None,
        *,
        image_pretrained: bool | str | None = None,
        text_pretrained: bool | None = None,
        embed_dim: int = 256,
        pooling: str = "cls",
        dropout: float = 0.1,
        image_size: int | None = None,
        context_length: int = 77,
        temperature: float | None = None,
        learn_temperature: bool | None = None,
    ) -> HybridModel:
        """`pretrained` (default True) sets both towers' weights; `image_pretrained` (bool or a
        local weights file) and `text_pretrained` override it per tower. `text` may name a
        local folder (`hf:/path/to/model`) holding a saved HF model and tokenizer."""
        if pretrained is not None and not isinstance(pretrained, bool):
            raise ModelError(
                f"hybrid: pretrained must be True or False, got {pretrained!r}; "
                "give a local weights file as image_pretrained=<file>, a local text model as text='hf:<folder>'"
            )
        default = True if pretrained is None else pretrained
        image_pretrained = default if image_pretrained is None else image_pretrained
        text_pretrained = default if text_pretrained is None else bool(text_pretrained)
        image_name = strip_prefix(image, IMAGE_PREFIX, "image")
        text_source = strip_prefix(text, TEXT_PREFIX, "text")
        image_encoder = create_image_encoder(image_name, image_pretrained)
        text_encoder = create_text_encoder(text_source, text_pretrained)
        temperature, learnable = resolve_temperature(temperature, learn_temperature)
        model = cls(
            image_encoder,
            text_encoder,
            load_tokenizer(text_source),
            image=image,
            text=text,
            embed_dim=embed_dim,
            pooling=pooling,
            dropout=dropout,
            context_length=context_length,
            temperature=temperature,
            learn_temperature=learnable,
            preprocess=image_preprocess(image_encoder, image_size),
            provenance={"image_pretrained": image_pretrained, "text_pretrained": text_pretrained},
        )
        model.tower_origins = {IMAGE: IMAGENET_WEIGHTS if image_pretrained else RANDOM,
                               TEXT: LANGUAGE_MODEL_WEIGHTS if text_pretrained else RANDOM}
        return model

    @classmethod
    def from_config(cls, cfg: dict, folder: str | Path | None = None) -> HybridModel:
        """Architecture from `cfg` alone; the tokenizer from `folder/tokenizer/` (written by
        `save_pretrained_parts`), else from the `text` source if it is local or cached."""
        cls.check_config_backend(cfg)
        image_encoder = create_image_encoder(
            strip_prefix(cfg["image"], IMAGE_PREFIX, "image"), False
        )
        text_encoder = text_encoder_from_config(cfg["hf_config"])
        return cls(
            image_encoder,
            text_encoder,
            cls._tokenizer_for_rebuild(cfg, folder),
            image=cfg["image"],
            text=cfg["text"],
            embed_dim=cfg["embed_dim"],
            pooling=cfg["pooling"],
            dropout=cfg["dropout"],
            context_length=cfg["context_length"],
            temperature=cfg["temperature"],
            learn_temperature=cfg["learn_temperature"],
            preprocess=cfg["preprocess"],
            provenance={k: cfg[k] for k in ("image_pretrained", "text_pretrained") if k in cfg},
        )

    @staticmethod
    def _tokenizer_for_rebuild(cfg: dict, folder: str | Path | None):
        if folder is not None and (Path(folder) / TOKENIZER_DIR).is_dir():
            return load_tokenizer(str(Path(folder) / TOKENIZER_DIR), local_files_only=True)
        source = strip_prefix(cfg["text"], TEXT_PREFIX, "text")
        try:
            return load_tokenizer(source, local_files_only=True)
        except ModelError as error:
            where = f"{folder}/{TOKENIZER_DIR}" if folder is not None else "a checkpoint folder"
            raise ModelError(
                f"no tokenizer for the hybrid text encoder {cfg['text']!r}: expected it in {where} "
                "(written by save_pretrained_parts) or in a local folder / HF cache"
            ) from error

    def save_pretrained_parts(self, folder: str | Path) -> list[Path]:
        target = Path(folder) / TOKENIZER_DIR
        self.tokenizer.save_pretrained(str(target))
        return [target]

    def _check_tokenizer(self, text: str) -> None:
        tokens = len(self.tokenizer)
        embeddings = self.text_encoder.get_input_embeddings().num_embeddings
        if tokens > embeddings:
            raise ModelError(
                f"tokenizer for {text!r} has {tokens} tokens but the text encoder embeds only "
                f"{embeddings}; tokenizer and model do not belong together"
            )

    def parameter_part(self, name: str) -> str:
        if name.startswith("image_encoder."):
            return IMAGE
        if name.startswith("text_encoder."):
            return TEXT
        return HEADS

    def timm_modules(self) -> dict[str, nn.Module]:
        return {"image_encoder.": self.image_encoder}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.image_encoder.set_grad_checkpointing(enable)
        set_hf_grad_checkpointing(self.text_encoder, enable)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.image_projection(self.image_encoder(images))
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.text_encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        features = self.text_projection(pool_tokens(hidden, batch["attention_mask"], self.pooling))
        return nn.functional.normalize(features, dim=-1) if normalize else features
