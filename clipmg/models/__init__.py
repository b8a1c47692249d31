"""Models by name: `create_model("openclip:clipmg-small")`, `create_model("hybrid", ...)`,
`create_model("timm:resnet50", num_classes=32)`, wrapped with `head=`, `pose_fusion=`, `hand_crops=`,
`clip_frames=` (+ `temporal=`).

Importing this package registers every backend and wrapper with `clipmg.models.registry`.
"""

from clipmg.models import backbones  # noqa: F401  (registers the small-frame backbones with timm)
from clipmg.models.base import ContrastiveModel, model_extras
from clipmg.models.fusion import PoseFusionModel
from clipmg.models.handcrops import HandCropModel
from clipmg.models.heads import ProjectionHead
from clipmg.models.hybrid import HybridModel
from clipmg.models.openclip import OpenClipModel
from clipmg.models.registry import (
    DEFAULT_MODEL,
    compose_model,
    create_model,
    create_model_from_config,
    create_model_from_spec,
    list_models,
)
from clipmg.models.spec import ModelSpec, WrapSpec
from clipmg.models.supervised import SupervisedModel
from clipmg.models.temporal import TEMPORAL_HEADS, ClipModel

__all__ = [
    "DEFAULT_MODEL",
    "TEMPORAL_HEADS",
    "ClipModel",
    "ContrastiveModel",
    "HandCropModel",
    "HybridModel",
    "ModelSpec",
    "OpenClipModel",
    "PoseFusionModel",
    "ProjectionHead",
    "SupervisedModel",
    "WrapSpec",
    "compose_model",
    "create_model",
    "create_model_from_config",
    "create_model_from_spec",
    "list_models",
    "model_extras",
]
