"""`supervised` backend: an image backbone and a linear classifier over the classes.

Three kinds of backbone, named by a prefix:

- `timm:<name>`: any timm model, created with `num_classes=0` (its pooled features), e.g.
  `timm:resnet50`, `timm:tf_efficientnetv2_b0`;
- `torchvision:alexnet`: torchvision's AlexNet, its classifier's last layer removed (4096-d);
- `clip`: the image tower of a clipmg contrastive model (`SupervisedModel.wrap(model, C)`), whose
  normalised image embedding feeds the head. `init_zero_shot_head` then sets the head to
  `scale * class prompt embeddings` (bias 0): before any training its logits are exactly the
  zero-shot classifier's (the LP-FT / FLYP starting point). The linear probe
  (`clipmg.jobs.linear_probe`) writes the same kind of model.

    create_model("timm:resnet50", num_classes=32, pretrained=True)
    SupervisedModel.wrap(load_checkpoint("run/best")[0], num_classes=32)

Parts (see base.py): the backbone is "image" (for a wrapped contrastive model its image tower and
projection; its text tower is kept, frozen, only so the checkpoint rebuilds offline), the
classifier is "heads". `forward(images, texts=None, **extras)` returns class logits, so the trainer
(and DistributedDataParallel) train it through `forward`; `class_logits` is the same scoring rule
for validation, predict, evaluate and test.py. `encode_image` gives the backbone's pooled
features (normalised if asked), so embeddings and the projector still work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipmg.errors import ModelError
from clipmg.models.base import HEADS, IMAGE, IMAGENET_WEIGHTS, RANDOM, TEXT, ContrastiveModel
from clipmg.models.hybrid import create_image_encoder, image_preprocess
from clipmg.models.registry import create_model_from_config, register_backend
from clipmg.models.spec import wants_pretrained

TIMM_PREFIX, TORCHVISION_PREFIX, CLIP_BACKBONE = "timm:", "torchvision:", "clip"
TORCHVISION_BACKBONES = ("alexnet",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's stride-4 stem and three 3x3/2 max-pools leave no pixel below this input size.
ALEXNET_MIN_SIZE = 63


def is_supervised_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith((TIMM_PREFIX, TORCHVISION_PREFIX))


# --- backbones ----------------------------------------------------------------------------------


def create_torchvision_backbone(name: str, pretrained: bool | str) -> nn.Module:
    """AlexNet with the last linear layer of its classifier removed: (B, 4096) features."""
    import torchvision

    if name not in TORCHVISION_BACKBONES:
        raise ModelError(f"unknown torchvision backbone {name!r}; supported: {', '.join(TORCHVISION_BACKBONES)}")
    try:
        model = torchvision.models.alexnet(weights="DEFAULT" if pretrained is True else None)
    except (OSError, RuntimeError) as error:
        raise ModelError(f"could not download torchvision's {name} weights: {error}. Without internet, "
                         "download them once and pass the file as --pretrained <file>.") from error
    if isinstance(pretrained, str):
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    model.classifier = model.classifier[:-1]
    model.num_features = model.classifier[-2].out_features
    return model


def backbone_preprocess(backbone: nn.Module, spec: str, image_size: int | None) -> dict[str, Any]:
    if spec.startswith(TIMM_PREFIX):
        return image_preprocess(backbone, image_size)
    return {"image_size": int(image_size or 224), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "interpolation": "bilinear"}


def create_backbone(spec: str, pretrained: bool | str, image_size: int | None) -> tuple[nn.Module, dict]:
    """(backbone giving pooled features with `.num_features`, preprocess_config) for
    `timm:<name>` or `torchvision:<name>`."""
    if spec.startswith(TIMM_PREFIX) and len(spec) > len(TIMM_PREFIX):
        backbone = create_image_encoder(spec[len(TIMM_PREFIX):], pretrained)
    elif spec.startswith(TORCHVISION_PREFIX):
        backbone = create_torchvision_backbone(spec[len(TORCHVISION_PREFIX):], pretrained)
    else:
        raise ModelError(f"unknown supervised backbone {spec!r}: use 'timm:<name>' (e.g. timm:resnet50, "
                         "timm:tf_efficientnetv2_b0) or 'torchvision:alexnet'")
    preprocess = backbone_preprocess(backbone, spec, image_size)
    if spec == TORCHVISION_PREFIX + "alexnet" and preprocess["image_size"] < ALEXNET_MIN_SIZE:
        raise ModelError(f"torchvision:alexnet needs an image size of at least {ALEXNET_MIN_SIZE} px, "
                         f"got {preprocess['image_size']}")
    return backbone, preprocess


# --- model --------------------------------------------------------------------------------------


@register_backend
class SupervisedModel(ContrastiveModel):
    backend = "supervised"
    name_argument = "backbone"
    has_classifier_head = True

    @classmethod
    def accepts(cls, name: str) -> bool:
        return is_supervised_name(name)

    @classmethod
    def create_named(cls, name: str, pretrained=None, **options) -> SupervisedModel:
        return cls.create(name, pretrained=pretrained, **options)

    name_pattern = "timm:<name> or torchvision:alexnet"
    spec_settings = ("pretrained", "image_size")

    def __init__(self, backbone: nn.Module, *, spec: str, num_classes: int, feature_dim: int,
                 preprocess: dict[str, Any], dropout: float = 0.0, normalize_features: bool = False,
                 provenance: dict[str, Any] | None = None):
        super().__init__()
        if num_classes < 1:
            raise ModelError(f"a classifier head needs at least one class, got num_classes={num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.spec = spec
        self.normalize_features = normalize_features
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)
        # Not trained: kept because Classifier and TensorBoard logging read `scale()`.
        self._init_logit_scale(1.0, learnable=False)
        self.preprocess_config = dict(preprocess)
        self.model_config = {"backend": self.backend, "name": f"supervised:{spec}", "backbone": spec,
                             "num_classes": int(num_classes), "feature_dim": int(feature_dim),
                             "dropout": float(dropout), "normalize_features": bool(normalize_features),
                             "preprocess": dict(preprocess), **(provenance or {})}
        if self.is_wrapped:
            self.extra_inputs = tuple(backbone.extra_inputs)
            self.input_settings = dict(backbone.input_settings)
            self.tower_origins = {IMAGE: backbone.tower_origins[IMAGE]}
            self.freeze()
        else:
            self.tower_origins = {IMAGE: RANDOM}

    @property
    def is_wrapped(self) -> bool:
        return isinstance(self.backbone, ContrastiveModel)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def create(cls, backbone: str, num_classes: int | None = None, pretrained=None, *,
               image_size: int | None = None, dropout: float = 0.0) -> SupervisedModel:
        """`backbone`: `timm:<name>` or `torchvision:alexnet`; `pretrained`: True (downloads the
        library's default weights), False/None, or a local weights file."""
        if num_classes is None:
            raise ModelError(f"{backbone} with a linear head needs num_classes (the number of classes)")
        pretrained = wants_pretrained(pretrained)
        net, preprocess = create_backbone(backbone, pretrained, image_size)
        model = cls(net, spec=backbone, num_classes=num_classes, feature_dim=int(net.num_features),
                    preprocess=preprocess, dropout=dropout,
                    provenance={"pretrained": pretrained if isinstance(pretrained, bool) else str(pretrained)})
        model.tower_origins = {IMAGE: IMAGENET_WEIGHTS if pretrained else RANDOM}
        return model

    @classmethod
    def wrap(cls, model: ContrastiveModel, num_classes: int, dropout: float = 0.0) -> SupervisedModel:
        """The image tower of a contrastive `model` (its weights kept) + a new linear head over
        its normalised image embedding (initialised as nn.Linear does; see `init_zero_shot_head`)."""
        if not isinstance(model, ContrastiveModel) or model.has_classifier_head:
            raise ModelError(f"can only wrap a contrastive image-text model, got {type(model).__name__}")
        feature_dim = int(model.model_config.get("embed_dim") or cls._measure_dim(model))
        return cls(model, spec=CLIP_BACKBONE, num_classes=num_classes, feature_dim=feature_dim,
                   preprocess=model.preprocess_config, dropout=dropout, normalize_features=True,
                   provenance={"tower": model.model_config})

    @classmethod
    def wrap_with_head(cls, model: ContrastiveModel, num_classes: int | None, dropout: float = 0.0,
                       source: str = "the model") -> SupervisedModel:
        """`model` with a linear head over `num_classes`: wrapped if it has none, kept if it has
        one of that size (fine-tuning a linear-head checkpoint)."""
        if model.has_classifier_head:
            if num_classes is not None and model.classifier.out_features != num_classes:
                raise ModelError(f"{source} has a head over {model.classifier.out_features} classes; "
                                 f"the label file has {num_classes}")
            return model
        if num_classes is None:
            raise ModelError(f"a linear head over {source} needs num_classes (the number of classes)")
        return cls.wrap(model, num_classes, dropout=dropout)

    @staticmethod
    def _measure_dim(model: ContrastiveModel) -> int:
        with torch.no_grad():
            return int(model.encode_text(["a"]).shape[-1])

    @classmethod
    def from_config(cls, cfg: dict, folder: str | Path | None = None) -> SupervisedModel:
        cls.check_config_backend(cfg)
        try:
            spec, num_classes, dropout = cfg["backbone"], int(cfg["num_classes"]), float(cfg.get("dropout", 0.0))
            if spec == CLIP_BACKBONE:
                return cls.wrap(create_model_from_config(cfg["tower"], folder=folder), num_classes, dropout)
            net, _ = create_backbone(spec, False, cfg["preprocess"]["image_size"])
            return cls(net, spec=spec, num_classes=num_classes, feature_dim=int(cfg["feature_dim"]),
                       preprocess=cfg["preprocess"], dropout=dropout,
                       provenance={"pretrained": cfg.get("pretrained", False)})
        except KeyError as error:
            raise ModelError(f"supervised model_config lacks {error}; was it written by clipmg?") from None

    def save_pretrained_parts(self, folder: str | Path) -> list[Path]:
        return self.backbone.save_pretrained_parts(folder) if self.is_wrapped else []

    @torch.no_grad()
    def init_zero_shot_head(self, class_embeddings: torch.Tensor, scale: float | torch.Tensor) -> None:
        """Head = `scale * class_embeddings` (C, D), bias 0: logits equal the zero-shot
        classifier's `scale * normalised features @ class_embeddings.T`."""
        if not self.normalize_features:
            raise ModelError("a zero-shot head needs a wrapped contrastive image tower (normalised embeddings)")
        if tuple(class_embeddings.shape) != tuple(self.classifier.weight.shape):
            raise ModelError(f"class embeddings of shape {tuple(class_embeddings.shape)} do not fit the head "
                             f"{tuple(self.classifier.weight.shape)} (classes x embedding size)")
        self.classifier.weight.copy_(torch.as_tensor(scale, dtype=torch.float32) * class_embeddings.float())
        self.classifier.bias.zero_()

    # --- encoding -----------------------------------------------------------------------------

    def features(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """What the head sees: pooled backbone features, or a wrapped tower's normalised embedding."""
        if self.is_wrapped:
            return self.backbone.encode_image(images, normalize=True, **extras)
        return self.backbone(images)

    def encode_image(self, images: torch.Tensor, normalize: bool = True, **extras: torch.Tensor) -> torch.Tensor:
        features = self.features(images, **extras)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        raise ModelError(f"the supervised {self.spec} model classifies with its own linear head and has no "
                         "text tower; prompts and captions do not apply to it")

    def forward(self, images: torch.Tensor, texts=None, **extras: torch.Tensor) -> torch.Tensor:
        """(B, C) class logits (texts are ignored: the head scores the classes)."""
        return self.classifier(self.dropout(self.features(images, **extras)))

    def scoring_features(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        return self.features(images, **extras)

    def logits_from_features(self, features: torch.Tensor, class_embeddings: torch.Tensor | None = None
                             ) -> torch.Tensor:
        return self.classifier(self.dropout(features)).float()

    def embedding_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(features, dim=-1)

    def class_logits(self, images: torch.Tensor, class_embeddings: torch.Tensor | None = None,
                     **extras: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.scoring_features(images, **extras))

    # --- training helpers -----------------------------------------------------------------------

    def parameter_part(self, name: str) -> str:
        if name.startswith("classifier."):
            return HEADS
        if name.startswith("backbone.") and self.is_wrapped:
            # The tower's own projection heads belong to the image embedding here; its text
            # side (and its unused logit_scale) stays frozen.
            sub = name[len("backbone."):]
            return TEXT if sub == "logit_scale" or self.backbone.parameter_part(sub) == TEXT else IMAGE
        return IMAGE if name.startswith("backbone.") else HEADS

    def timm_modules(self) -> dict[str, nn.Module]:
        if self.is_wrapped:
            return {f"backbone.{prefix}": module for prefix, module in self.backbone.timm_modules().items()}
        return {"backbone.": self.backbone} if self.spec.startswith(TIMM_PREFIX) else {}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.is_wrapped or self.spec.startswith(TIMM_PREFIX):
            self.backbone.set_grad_checkpointing(enable)
        else:
            super().set_grad_checkpointing(enable)

    def freeze(self, image: bool = False, text: bool = True) -> None:
        """Lock the backbone (`image=True`: a linear probe); the text side never trains."""
        super().freeze(image=image, text=True)

