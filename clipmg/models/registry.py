"""Models by name. Backends and wrappers register themselves here; this module imports none of them.

- A *backend* builds a model from a name (`openclip:<model>`, `hybrid`, `timm:<name>`, ...).
- A *wrapper* changes a built model (pose fusion, a linear class head, hand crops, a temporal head
  over clips of frames).

`create_model(name, head=..., pose_fusion=..., hand_crops=...)` is the one way to build a model:
the trainer, checkpoints (`create_model_from_config`) and users all go through it, so a model
named the same is built the same everywhere. Wrappers compose in one order: pose fusion (on the
image embedding), then a linear head (over the fused embedding), then hand crops (around the
whole scorer) or a clip model (a temporal head over the frames' embeddings, outermost).
"""

from __future__ import annotations

import fnmatch
import inspect
from pathlib import Path
from typing import Any

from clipmg.errors import ModelError
from clipmg.models.spec import SPEC_SETTINGS, ModelSpec

DEFAULT_MODEL = "openclip:clipmg-r10-half"
#: `head=`: how classes are scored (not `base.HEADS`, the parameter part of the projection heads)
HEAD_KINDS = ("contrastive", "linear")
POSE_FUSIONS = ("none", "concat", "gated")

#: backend name (as in `model_config["backend"]`) -> class with `from_config(cfg, folder)`
BACKENDS: dict[str, type] = {}
#: backends that build models from a name, in registration order
_NAMED: list[type] = []
#: backends that list their names (`model_names() -> (featured, others)`), for `list_models`
_LISTED: list[type] = []


def register_backend(cls: type) -> type:
    """Class decorator: `cls.backend` rebuilds from configs; if `cls` defines `accepts(name)` and
    `create_named(name, **options)`, it also builds models from names, and if it defines
    `model_names()` its names are listed (in the order of `cls.list_order`)."""
    BACKENDS[cls.backend] = cls
    if "accepts" in vars(cls):
        _NAMED.append(cls)
    if "model_names" in vars(cls):
        _LISTED.append(cls)
    return cls


def _backend_for(name: str) -> type:
    for cls in _NAMED:
        if cls.accepts(name):
            return cls
    raise ModelError(
        f"unknown model {name!r}: use 'openclip:<open_clip model name>' (e.g. {DEFAULT_MODEL}, "
        "openclip:ViT-B-32), 'hybrid', or a supervised baseline 'timm:<name>' / 'torchvision:alexnet' "
        "(with num_classes)")


def check_options(cls: type, options: dict) -> None:
    """Unknown keyword options are a user's typo: say which ones are valid (the parameters of the
    backend's `create`, less the one the model name fills)."""
    taken = ("cls", getattr(cls, "name_argument", None))
    valid = [name for name in inspect.signature(cls.create).parameters if name not in taken]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ModelError(f"unknown option(s) {', '.join(unknown)} for the {cls.backend} backend; "
                         f"valid: {', '.join(valid)}")


def create_model(name: str, pretrained: Any = None, *, head: str | None = None, num_classes: int | None = None,
                 head_dropout: float = 0.0, pose_fusion: str | None = None, hand_crops: bool = False,
                 hand_full_frame: bool = True, hand_margin: float | None = None,
                 keypoint_cache: str | None = None, clip_frames: int | None = None, temporal: str | None = None,
                 **options):
    """Build a model by name, then wrap it as asked.

    `name`: `openclip:<model>` (`pretrained`: open_clip tag or weights file), `hybrid`
    (`image="timm:<name>"`, `text="hf:<name or folder>"`, `pretrained`: bool), or a supervised
    baseline `timm:<name>` / `torchvision:alexnet` (`num_classes`; `pretrained`: bool or weights
    file). `options` go to the backend. `head`: None keeps the backend's own scoring,
    "contrastive" requires prompt scoring, "linear" puts a linear class head over the image
    embedding. `pose_fusion` ("concat"/"gated") fuses MediaPipe keypoints with the image
    embedding; `hand_crops` scores the frame's hand crops; `clip_frames` (K) with `temporal`
    ("mean", "attention", "transformer") classifies clips of K frames (see `compose_model`).
    """
    cls = _backend_for(name)
    check_options(cls, options)
    if getattr(cls, "has_classifier_head", False):
        if head == "contrastive":
            raise ModelError(f"{name} is an image backbone without a text tower: give it a linear head "
                             "(head='linear', --head linear)")
        options["num_classes"] = num_classes
        options["dropout"] = head_dropout
    model = cls.create_named(name, pretrained=pretrained, **options)
    return compose_model(model, head=head, num_classes=num_classes, head_dropout=head_dropout,
                         pose_fusion=pose_fusion, hand_crops=hand_crops, hand_full_frame=hand_full_frame,
                         hand_margin=hand_margin, keypoint_cache=keypoint_cache, clip_frames=clip_frames,
                         temporal=temporal, source=name)


def compose_model(model, *, head: str | None = None, num_classes: int | None = None, head_dropout: float = 0.0,
                  pose_fusion: str | None = None, hand_crops: bool = False, hand_full_frame: bool = True,
                  hand_margin: float | None = None, keypoint_cache: str | None = None,
                  clip_frames: int | None = None, temporal: str | None = None, source: str = "the model"):
    """Wrap a built model (e.g. one loaded from a checkpoint to fine-tune) in pose fusion, a
    linear head and hand crops, in that order, then with `clip_frames` in a clip model (temporal
    head `temporal`, default "mean"). A wrapper the model already has is kept: a clip model's
    temporal head stays outermost, around its inner model wrapped as asked."""
    clip = None
    if getattr(model, "backend", None) == "clip":
        clip, model = model, model.inner
    if head not in (None, *HEAD_KINDS):
        raise ModelError(f"head must be one of {', '.join(HEAD_KINDS)}, got {head!r}")
    if pose_fusion not in (None, *POSE_FUSIONS):
        raise ModelError(f"pose fusion must be one of {', '.join(POSE_FUSIONS)}, got {pose_fusion!r}")
    if pose_fusion not in (None, "none"):
        model = BACKENDS["pose_fusion"].wrap(model, pose_fusion, keypoint_cache=keypoint_cache)
    if head == "contrastive" and model.has_classifier_head:
        raise ModelError(f"{source} has a linear class head: train it with head='linear' (--head linear)")
    if head == "linear":
        model = BACKENDS["supervised"].wrap_with_head(model, num_classes, dropout=head_dropout, source=source)
    if hand_crops:
        model = BACKENDS["hand_crops"].wrap(model, include_full_frame=hand_full_frame, margin=hand_margin,
                                            keypoint_cache=keypoint_cache)
    if clip is not None:
        return clip.around(model, clip_frames, temporal)
    if clip_frames:
        model = BACKENDS["clip"](model, clip_frames=clip_frames, temporal=temporal or "mean")
    return model


def create_model_from_spec(spec: ModelSpec):
    """`create_model` of a spec: the backend that accepts `spec.name` maps the spec to its own
    options (`options_from_spec`), then the wrappers of `spec.wrap` go around it."""
    cls = _backend_for(spec.name)
    return create_model(spec.name, **cls.options_from_spec(spec), **spec.wrap.options())


def unread_settings(name: str) -> list[tuple[tuple[str, ...], str]]:
    """The spec settings the backend of `name` does not read, grouped by the model names that
    read them: [(settings, "hybrid"), ...]. An unknown name reads nothing here (`create_model`
    says why it is unknown)."""
    try:
        cls = _backend_for(name)
    except ModelError:
        return []
    groups: dict[str, list[str]] = {}
    for setting in SPEC_SETTINGS:
        if setting not in cls.spec_settings:
            readers = " or ".join(other.name_pattern for other in sorted(_NAMED, key=_listed_first)
                                  if setting in other.spec_settings)
            groups.setdefault(readers, []).append(setting)
    return [(tuple(settings), readers) for readers, settings in groups.items()]


def _listed_first(cls: type) -> float:
    return getattr(cls, "list_order", float("inf"))


def has_classifier_head(name: str) -> bool:
    """Whether the backend of `name` scores classes with a linear head (no text tower)."""
    try:
        return bool(getattr(_backend_for(name), "has_classifier_head", False))
    except ModelError:
        return False


def create_model_from_config(cfg: dict, folder: str | Path | None = None):
    """Rebuild the architecture described by a `model_config`, without pretrained weights or
    downloads. `folder`: a checkpoint folder with what `save_pretrained_parts` wrote there."""
    backend = cfg.get("backend") if isinstance(cfg, dict) else None
    if backend not in BACKENDS:
        raise ModelError(f"model_config has unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[backend].from_config(cfg, folder=folder)


def list_models(pattern: str | None = None) -> list[str]:
    """Every name `create_model` accepts that can be listed: each backend's featured names (clipmg's
    own configs, `hybrid`) first, then the rest (every other open_clip architecture)."""
    listed = [cls.model_names() for cls in sorted(_LISTED, key=lambda cls: cls.list_order)]
    names = [name for featured, _ in listed for name in featured] + [name for _, rest in listed for name in rest]
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]
