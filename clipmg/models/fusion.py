"""`PoseFusionModel`: an image-text model whose image embedding also sees the frame's keypoints.

A small MLP encodes the MediaPipe keypoint vector (`clipmg.pose.keypoints`: normalised
coordinates, visibility, found flags) into a pose embedding; frames where neither a person nor a
hand was found use a learned missing-pose embedding instead. The pose embedding is fused with
the inner model's unnormalised image embedding:

- "concat": Linear([image; pose]) back to the embedding size, initialised to pass the image
  embedding through unchanged;
- "gated":  image + sigmoid(gate([image; pose])) * Linear(pose), the pose branch starting at 0.

Both start out as exactly the inner model, so fusing a trained checkpoint fine-tunes from where
it was. Fusion happens after the inner model's projection into the shared space (on the
unnormalised image embedding), not before it: the backends keep that projection inside their
image towers in different places (open_clip's ResNet attention pool, ViT `proj`, the hybrid's
head), so this is the one point every `ContrastiveModel` exposes; the fusion layer is itself a
projection in the shared space, trained with the same losses. The text tower is the inner one.

The pose encoder, missing-pose embedding and fusion layer are "heads" parameters: they train at
`lr_heads` and stay trainable when the towers are frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import clipmg.pose.fields  # noqa: F401  (registers the "keypoints" per-frame input)
from clipmg.errors import ModelError
from clipmg.models.base import ContrastiveModel, ImageSideWrapper
from clipmg.models.registry import POSE_FUSIONS, create_model_from_config, register_backend
from clipmg.pose.keypoints import HAND_FOUND, KEYPOINT_DIM, POSE_FOUND

FUSIONS = tuple(name for name in POSE_FUSIONS if name != "none")
DEFAULT_POSE_DIM = 128
DEFAULT_HIDDEN = 256
GATE_BIAS = -2.0  # sigmoid(-2) = 0.12: the pose branch starts small in gated fusion


class KeypointEncoder(nn.Module):
    """(B, KEYPOINT_DIM) keypoint vectors -> (B, pose_dim); a learned vector where nothing was found."""

    def __init__(self, pose_dim: int = DEFAULT_POSE_DIM, hidden: int = DEFAULT_HIDDEN):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(KEYPOINT_DIM, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, pose_dim))
        self.missing = nn.Parameter(torch.zeros(pose_dim))
        nn.init.normal_(self.missing, std=0.02)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        keypoints = keypoints.float()
        if keypoints.ndim != 2 or keypoints.shape[1] != KEYPOINT_DIM:
            raise ModelError(f"keypoints must be (batch, {KEYPOINT_DIM}) vectors, got {tuple(keypoints.shape)}")
        found = keypoints[:, [POSE_FOUND, *HAND_FOUND]].amax(dim=1, keepdim=True) > 0.5
        encoded = self.mlp(keypoints)
        return torch.where(found, encoded, self.missing.to(encoded.dtype).expand_as(encoded))


@register_backend
class PoseFusionModel(ImageSideWrapper):
    backend = "pose_fusion"
    wrapper_name = "pose fusion"
    extra_inputs = ("keypoints",)

    def __init__(self, inner: ContrastiveModel, fusion: str = "concat", pose_dim: int = DEFAULT_POSE_DIM,
                 hidden: int = DEFAULT_HIDDEN, embed_dim: int | None = None, keypoint_cache: str | None = None):
        if fusion not in FUSIONS:
            raise ModelError(f"pose fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        super().__init__(inner)
        self.fusion = fusion
        dim = int(embed_dim or self._image_dim(inner))
        self.pose_encoder = KeypointEncoder(pose_dim, hidden)
        if fusion == "concat":
            self.fuse = nn.Linear(dim + pose_dim, dim)
            with torch.no_grad():
                self.fuse.weight.zero_()
                self.fuse.weight[:, :dim].copy_(torch.eye(dim))
                self.fuse.bias.zero_()
        else:
            self.pose_proj = nn.Linear(pose_dim, dim)
            self.gate = nn.Linear(dim + pose_dim, dim)
            with torch.no_grad():
                self.pose_proj.weight.zero_()
                self.pose_proj.bias.zero_()
                self.gate.bias.fill_(GATE_BIAS)
        self.input_settings = {"keypoints": keypoint_cache}
        self.model_config = {"backend": self.backend, "fusion": fusion, "pose_dim": pose_dim, "hidden": hidden,
                             "embed_dim": dim, "keypoint_dim": KEYPOINT_DIM, "inputs": dict(self.input_settings),
                             "inner": inner.model_config}
        self.preprocess_config = dict(inner.preprocess_config)
        self.frozen_parts = set(inner.frozen_parts)

    @staticmethod
    def _image_dim(inner: ContrastiveModel) -> int:
        size = inner.preprocess_config.get("image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        was_training = inner.training
        inner.eval()
        with torch.no_grad():
            dim = inner.encode_image(torch.zeros(1, 3, *size, device=inner.device), normalize=False).shape[-1]
        inner.train(was_training)
        return int(dim)

    @classmethod
    def wrap(cls, model: ContrastiveModel, fusion: str, keypoint_cache: str | None = None) -> ContrastiveModel:
        """`model` fused with keypoints; unchanged when it already takes them (fine-tuning a fused
        checkpoint, or a linear head over one)."""
        if "keypoints" in model.extra_inputs:
            return model
        return cls(model, fusion=fusion, keypoint_cache=keypoint_cache)

    @classmethod
    def from_config(cls, cfg: dict, folder: str | Path | None = None) -> PoseFusionModel:
        cls.check_config_backend(cfg)
        if cfg.get("keypoint_dim") != KEYPOINT_DIM:
            raise ModelError(f"this checkpoint's pose encoder takes {cfg.get('keypoint_dim')} keypoint values per "
                             f"frame; this version of clipmg extracts {KEYPOINT_DIM}")
        inner = create_model_from_config(cfg["inner"], folder=folder)
        return cls(inner, fusion=cfg["fusion"], pose_dim=cfg["pose_dim"], hidden=cfg["hidden"],
                   embed_dim=cfg["embed_dim"], keypoint_cache=(cfg.get("inputs") or {}).get("keypoints"))

    # --- fused image side --------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, normalize: bool = True,
                     keypoints: torch.Tensor | None = None) -> torch.Tensor:
        if keypoints is None:
            raise ModelError("the pose fusion model needs each frame's keypoints (the 'keypoints' input); "
                             "build the dataset with the model's extra fields")
        image = self.inner.encode_image(images, normalize=False)
        pose = self.pose_encoder(keypoints.to(image.device)).to(image.dtype)
        both = torch.cat([image, pose], dim=-1)
        if self.fusion == "concat":
            fused = self.fuse(both)
        else:
            fused = image + torch.sigmoid(self.gate(both)) * self.pose_proj(pose)
        return nn.functional.normalize(fused, dim=-1) if normalize else fused
