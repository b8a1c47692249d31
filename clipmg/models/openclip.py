"""`openclip:<model>` backend: any open_clip architecture, including clipmg's own configs.

clipmg's JSON configs in `model_configs/` are registered with open_clip on import, so
`openclip:clipmg-small` works like `openclip:ViT-B-32`.

Parts (see base.py): "heads" are the final projections into the shared space: `visual.proj`
(ViT), `visual.attnpool` (ModifiedResNet: attention pooling that ends in the projection),
`visual.head` (timm tower adapter), `text_projection` / `text.proj` (text tower), plus a learnable
`logit_scale`. Everything else under `clip.visual` is "image", the rest of `clip` is "text".
"""

from __future__ import annotations

import difflib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipmg.errors import ModelError
from clipmg.models.base import (
    CLIP_WEIGHTS,
    DEFAULT_TEMPERATURE,
    HEADS,
    IMAGE,
    IMAGENET_WEIGHTS,
    LANGUAGE_MODEL_WEIGHTS,
    RANDOM,
    TEXT,
    ContrastiveModel,
    resolve_temperature,
)
from clipmg.models.registry import register_backend

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
PREFIX = "openclip:"

_IMAGE_HEADS = ("clip.visual.proj", "clip.visual.attnpool", "clip.visual.head")
_TEXT_HEADS = ("clip.text_projection", "clip.text.text_projection", "clip.text.proj")

_registered = False


def register_model_configs() -> None:
    """Make clipmg's JSON configs known to open_clip (once per process)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def clipmg_model_names() -> list[str]:
    return sorted(path.stem for path in MODEL_CONFIG_DIR.glob("*.json"))


def _has_prefix(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _has_schema(model_name: str) -> bool:
    return model_name.startswith(("hf-hub:", "local-dir:"))


def check_model_name(model_name: str) -> None:
    if _has_schema(model_name) or open_clip.get_model_config(model_name) is not None:
        return
    close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelError(
        f"unknown open_clip model {model_name!r}.{hint} "
        "See clipmg.models.list_models() for all names."
    )


def check_pretrained(model_name: str, pretrained: str | None) -> None:
    """A pretrained tag known to open_clip for this model, or an existing weights file."""
    if not pretrained or _has_schema(model_name):
        return
    if pretrained in open_clip.list_pretrained_tags_by_model(model_name):
        return
    if os.path.isfile(pretrained):
        return
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if os.sep in pretrained or "/" in pretrained or Path(pretrained).suffix:
        raise ModelError(f"pretrained weights file not found: {pretrained}")
    raise ModelError(
        f"unknown pretrained tag {pretrained!r} for open_clip model {model_name!r}; "
        f"known tags: {', '.join(tags) if tags else 'none (use a local weights file path)'}"
    )


@contextmanager
def _quiet_root_logging():
    """open_clip warns on the root logger that a model 'initialized randomly'; when rebuilding
    from a config (weights come from a checkpoint) or training from scratch, that is intended."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _create_open_clip(
    model_name: str,
    pretrained: str | None,
    image_size: int | None,
    context_length: int | None,
    pretrained_image: bool,
    cache_dir: str | None,
) -> torch.nn.Module:
    kwargs = dict(
        pretrained=pretrained,
        force_image_size=image_size,
        force_context_length=context_length,
        pretrained_image=pretrained_image,
        pretrained_text=pretrained_image,
        cache_dir=cache_dir,
    )
    try:
        if pretrained or pretrained_image:
            return open_clip.create_model(model_name, **kwargs)
        with _quiet_root_logging():
            return open_clip.create_model(model_name, **kwargs)
    except (RuntimeError, OSError, ValueError) as error:
        raise ModelError(
            f"could not create open_clip model {model_name!r} (pretrained={pretrained!r}): {error}. "
            "Without internet, download the weights once and pass the file path as pretrained."
        ) from error


def _preprocess_from(clip: torch.nn.Module, pretrained_image: bool) -> dict[str, Any]:
    cfg = open_clip.get_model_preprocess_cfg(clip)
    mean, std = cfg["mean"], cfg["std"]
    trunk = getattr(clip.visual, "trunk", None)
    if pretrained_image and trunk is not None:
        # ImageNet weights of a timm tower expect timm's normalisation, not OpenAI CLIP's.
        mean, std = trunk.pretrained_cfg.get("mean", mean), trunk.pretrained_cfg.get("std", std)
    size = cfg["size"]
    size = size if isinstance(size, int) else int(size[0]) if size[0] == size[1] else list(size)
    return {
        "image_size": size,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "interpolation": cfg.get("interpolation", "bicubic"),
    }


def _tower_origins(clip: torch.nn.Module, loaded_clip_weights: bool, pretrained_image: bool) -> dict[str, str]:
    if loaded_clip_weights:
        return {IMAGE: CLIP_WEIGHTS, TEXT: CLIP_WEIGHTS}
    if not pretrained_image:
        return {IMAGE: RANDOM, TEXT: RANDOM}
    hf_text = type(getattr(clip, "text", None)).__name__ == "HFTextEncoder"
    return {IMAGE: IMAGENET_WEIGHTS, TEXT: LANGUAGE_MODEL_WEIGHTS if hf_text else RANDOM}


def _tokenizer_vocab_size(tokenizer) -> int | None:
    size = getattr(tokenizer, "vocab_size", None)
    if size is None and hasattr(tokenizer, "tokenizer"):  # open_clip HFTokenizer
        size = len(tokenizer.tokenizer)
    return size


@register_backend
class OpenClipModel(ContrastiveModel):
    """Wraps an open_clip CLIP / CustomTextCLIP as `self.clip`, with clipmg's `logit_scale`."""

    backend = "openclip"
    name_argument = "model_name"

    @classmethod
    def accepts(cls, name: str) -> bool:
        return isinstance(name, str) and name.startswith(PREFIX)

    @classmethod
    def create_named(cls, name: str, pretrained: str | None = None, **options) -> OpenClipModel:
        return cls.create(name[len(PREFIX):], pretrained=pretrained, **options)

    name_pattern = PREFIX + "<model>"
    spec_settings = ("pretrained", "image_size", "temperature", "learn_temperature")

    list_order = 0

    @classmethod
    def model_names(cls) -> tuple[list[str], list[str]]:
        register_model_configs()
        own = clipmg_model_names()
        return [PREFIX + n for n in own], [PREFIX + n for n in open_clip.list_models() if n not in own]

    def __init__(
        self,
        clip: torch.nn.Module,
        tokenizer,
        *,
        model_name: str,
        pretrained: str | None,
        temperature: float,
        learn_temperature: bool,
        preprocess: dict[str, Any],
    ):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        # One logit_scale for all backends lives on the base class; open_clip's own is unused.
        self.clip.logit_scale = None
        self.clip.logit_bias = None
        self._init_logit_scale(temperature, learn_temperature)
        self._check_tokenizer()
        self.preprocess_config = dict(preprocess)
        self.model_config = {
            "backend": self.backend,
            "name": f"{PREFIX}{model_name}",
            "model_name": model_name,
            "pretrained": pretrained,
            "image_size": preprocess["image_size"],
            "context_length": int(clip.context_length),
            "embed_dim": self._measure_embed_dim(),
            "temperature": temperature,
            "learn_temperature": learn_temperature,
            "preprocess": dict(preprocess),
        }

    @classmethod
    def create(
        cls,
        model_name: str,
        pretrained: str | None = None,
        *,
        image_size: int | None = None,
        context_length: int | None = None,
        pretrained_image: bool = False,
        temperature: float | None = None,
        learn_temperature: bool | None = None,
        cache_dir: str | None = None,
    ) -> OpenClipModel:
        """`pretrained`: an open_clip tag (e.g. "openai") or a local weights file.
        `pretrained_image`: ImageNet / HF weights for timm / HF towers, when no CLIP weights.
        `temperature`: None keeps the pretrained model's (or 0.07 from scratch), learnable."""
        register_model_configs()
        check_model_name(model_name)
        check_pretrained(model_name, pretrained)
        clip = _create_open_clip(
            model_name, pretrained, image_size, context_length, pretrained_image, cache_dir
        )
        loaded_clip_weights = bool(pretrained) or _has_schema(model_name)
        default_temperature = float(torch.exp(-clip.logit_scale.detach()).item())
        temperature, learnable = resolve_temperature(
            temperature,
            learn_temperature,
            default=default_temperature if loaded_clip_weights else DEFAULT_TEMPERATURE,
        )
        tokenizer = open_clip.get_tokenizer(model_name, context_length=clip.context_length)
        model = cls(
            clip,
            tokenizer,
            model_name=model_name,
            pretrained=pretrained,
            temperature=temperature,
            learn_temperature=learnable,
            preprocess=_preprocess_from(clip, pretrained_image),
        )
        model.tower_origins = _tower_origins(clip, loaded_clip_weights, pretrained_image)
        return model

    @classmethod
    def from_config(cls, cfg: dict, folder: str | Path | None = None) -> OpenClipModel:
        cls.check_config_backend(cfg)
        register_model_configs()
        model_name = cfg["model_name"]
        check_model_name(model_name)
        clip = _create_open_clip(
            model_name, None, cfg["image_size"], cfg["context_length"], False, None
        )
        return cls(
            clip,
            open_clip.get_tokenizer(model_name, context_length=clip.context_length),
            model_name=model_name,
            pretrained=cfg.get("pretrained"),
            temperature=cfg["temperature"],
            learn_temperature=cfg["learn_temperature"],
            preprocess=cfg["preprocess"],
        )

    def _check_tokenizer(self) -> None:
        vocab = _tokenizer_vocab_size(self.tokenizer)
        model_vocab = getattr(self.clip, "vocab_size", None)
        if vocab is not None and model_vocab is not None and vocab > model_vocab:
            raise ModelError(
                f"tokenizer of {type(self.clip).__name__} has {vocab} tokens but the text tower "
                f"embeds only {model_vocab}; the text_cfg vocab_size does not fit the tokenizer"
            )

    def _measure_embed_dim(self) -> int:
        # open_clip towers do not expose one common attribute for it across CLIP variants.
        with torch.no_grad():
            return int(self.encode_text(["a"]).shape[-1])

    def parameter_part(self, name: str) -> str:
        if name == "logit_scale" or _has_prefix(name, _IMAGE_HEADS + _TEXT_HEADS):
            return HEADS
        return IMAGE if name.startswith("clip.visual.") else TEXT

    def timm_modules(self) -> dict[str, torch.nn.Module]:
        trunk = getattr(self.clip.visual, "trunk", None)
        return {"clip.visual.trunk.": trunk} if trunk is not None else {}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.set_grad_checkpointing(enable)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.tokenizer(list(texts)).to(self.device)
        tower = self._causal_text_tower()
        if tower is None:
            return self.clip.encode_text(tokens, normalize=normalize)
        # Causal attention pooled at the end-of-text token: the padding after the longest text
        # cannot change the result, so it is cut off (captions of ~15 tokens, not 77).
        tokens = tokens[:, : int(self.eot_positions(tokens).max()) + 1]
        return self.encode_text_embeddings(tower.token_embedding(tokens), self.eot_positions(tokens),
                                           normalize=normalize)

    def _causal_text_tower(self):
        """The CLIP-style text tower when it is causal and pools at the end-of-text token, else None."""
        try:
            tower = self._text_tower()
        except ModelError:
            return None
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        return tower if tower.attn_mask is not None and pool in ("argmax", "eos") else None

    # --- learned prompts (clipmg.prompts.learned) ----------------------------------------------

    def _text_tower(self):
        """The module holding open_clip's text parts: the CLIP itself, or `clip.text` (CustomTextCLIP)."""
        tower = self.clip if hasattr(self.clip, "token_embedding") else getattr(self.clip, "text", None)
        if tower is None or not hasattr(tower, "token_embedding") or getattr(tower, "cls_emb", None) is not None \
                or getattr(tower, "use_pad_mask", False):
            raise ModelError(f"learned prompts need an open_clip CLIP-style text transformer; "
                             f"{self.model_config.get('name')} has another text tower")
        return tower

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        return self._text_tower().token_embedding

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Where each tokenised text's end-of-text token is (the position open_clip pools)."""
        tower = self._text_tower()
        eos = getattr(tower, "text_eos_id", None) or getattr(tower, "eos_id", None)
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        if pool == "eos" and eos is not None:
            return (tokens == eos).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    def encode_text_embeddings(self, token_embeddings: torch.Tensor, eot_positions: torch.Tensor,
                               normalize: bool = True) -> torch.Tensor:
        """open_clip's encode_text from token embeddings (N, L, width) instead of token ids:
        positional embedding, causal transformer, final norm, pooling at `eot_positions`,
        projection. `encode_text_embeddings(token_embedding(t), eot_positions(t))` equals
        `clip.encode_text(t)`."""
        tower = self._text_tower()
        cast_dtype = tower.transformer.get_cast_dtype()
        length = token_embeddings.shape[1]
        x = token_embeddings.to(cast_dtype) + tower.positional_embedding[:length].to(cast_dtype)
        attn_mask = tower.attn_mask
        if attn_mask is not None:
            attn_mask = attn_mask[:length, :length]
        x = tower.ln_final(tower.transformer(x, attn_mask=attn_mask))
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        if pool == "first":
            x = x[:, 0]
        elif pool == "last":
            x = x[:, -1]
        else:
            x = x[torch.arange(x.shape[0], device=x.device), eot_positions.to(x.device)]
        projection = tower.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Module) else x @ projection
        return torch.nn.functional.normalize(x, dim=-1) if normalize else x
