"""Create clipmg models by name (`openclip:<model>`, `hybrid`, and supervised baselines `timm:<name>` /
`torchvision:alexnet`) or rebuild them from a model_config."""

from __future__ import annotations

import fnmatch
import inspect
from pathlib import Path

import open_clip

from clipmg.errors import ModelError
from clipmg.models.base import ContrastiveModel
from clipmg.models.fusion import PoseFusionModel
from clipmg.models.handcrops import HandCropModel
from clipmg.models.hybrid import HybridModel
from clipmg.models.openclip import OpenClipModel, clipmg_model_names, register_model_configs
from clipmg.models.supervised import SupervisedModel, is_supervised_name

OPENCLIP_PREFIX = "openclip:"
HYBRID = "hybrid"
BACKENDS = {OpenClipModel.backend: OpenClipModel, HybridModel.backend: HybridModel,
            SupervisedModel.backend: SupervisedModel}
BACKENDS.update({PoseFusionModel.backend: PoseFusionModel, HandCropModel.backend: HandCropModel})
DEFAULT_MODEL = "openclip:clipmg-small"


def _check_options(create, backend: str, kwargs: dict) -> None:
    """Unknown keyword options are a user's typo: say which ones are valid."""
    valid = [name for name in inspect.signature(create).parameters if name != "cls"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ModelError(
            f"unknown option(s) {', '.join(unknown)} for the {backend} backend; "
            f"valid: {', '.join(valid)}"
        )


def create_model(name: str, pretrained=None, **kwargs) -> ContrastiveModel:
    """`openclip:<model>` (`pretrained`: open_clip tag or weights file) or `hybrid`
    (`image="timm:<name>"`, `text="hf:<name or folder>"`, `pretrained`: bool), or a supervised
    baseline `timm:<name>` / `torchvision:alexnet` with a linear head (`num_classes=C`,
    `pretrained`: bool or weights file; see clipmg.models.supervised)."""
    if isinstance(name, str) and name.startswith(OPENCLIP_PREFIX):
        _check_options(OpenClipModel.create, "openclip", kwargs)
        return OpenClipModel.create(name[len(OPENCLIP_PREFIX) :], pretrained=pretrained, **kwargs)
    if name == HYBRID:
        _check_options(HybridModel.create, HYBRID, kwargs)
        return HybridModel.create(pretrained=pretrained, **kwargs)
    if is_supervised_name(name):
        _check_options(SupervisedModel.create, "supervised", kwargs)
        return SupervisedModel.create(name, pretrained=pretrained, **kwargs)
    raise ModelError(
        f"unknown model {name!r}: use 'openclip:<open_clip model name>' "
        f"(e.g. {DEFAULT_MODEL}, openclip:ViT-B-32), 'hybrid', or a supervised baseline "
        "'timm:<name>' / 'torchvision:alexnet' (with num_classes)"
    )


def create_model_from_config(cfg: dict, folder: str | Path | None = None) -> ContrastiveModel:
    """Rebuild the architecture described by `model.model_config`, without pretrained weights or
    downloads. `folder`: a checkpoint folder with what `save_pretrained_parts` wrote there."""
    backend = cfg.get("backend") if isinstance(cfg, dict) else None
    if backend not in BACKENDS:
        raise ModelError(
            f"model_config has unknown backend {backend!r}; known: {', '.join(BACKENDS)}"
        )
    return BACKENDS[backend].from_config(cfg, folder=folder)


def list_models(pattern: str | None = None) -> list[str]:
    """clipmg's own configs first, then `hybrid`, then every other open_clip architecture."""
    register_model_configs()
    own = clipmg_model_names()
    names = [OPENCLIP_PREFIX + n for n in own] + [HYBRID]
    names += [OPENCLIP_PREFIX + n for n in open_clip.list_models() if n not in own]
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]
