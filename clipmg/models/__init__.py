"""Contrastive image-text models: `create_model("openclip:clipmg-small")`, `create_model("hybrid", ...)`."""

from clipmg.models.base import ContrastiveModel, model_extras
from clipmg.models.factory import (
    DEFAULT_MODEL,
    create_model,
    create_model_from_config,
    list_models,
)
from clipmg.models.fusion import PoseFusionModel
from clipmg.models.handcrops import HandCropModel
from clipmg.models.heads import ProjectionHead
from clipmg.models.hybrid import HybridModel
from clipmg.models.openclip import OpenClipModel
from clipmg.models.supervised import SupervisedModel

__all__ = [
    "DEFAULT_MODEL",
    "ContrastiveModel",
    "HandCropModel",
    "HybridModel",
    "OpenClipModel",
    "PoseFusionModel",
    "ProjectionHead",
    "SupervisedModel",
    "create_model",
    "create_model_from_config",
    "list_models",
    "model_extras",
]
