"""`HandCropModel`: classify a frame by its hand crops (and optionally the full frame).

Its per-frame input "hand_boxes" (`clipmg.pose.hands`, from the MediaPipe hand detector in the
keypoint cache) holds up to two boxes per frame in the coordinates of the square model input.
The model takes a larger input than its inner model (`frame_size`, default twice the inner
size), cuts each box out with `torchvision.ops.roi_align` at the inner model's input size, and
encodes the crops, and the full frame shrunk to that size, with the inner image tower.

Scoring (`class_logits`): each candidate (valid crop, and the full frame when
`include_full_frame` or when no hand was found) gets class probabilities
softmax(scale * features @ class_embeddings.T); the frame's score for class c is the highest
probability of c over its candidates, returned as a log-probability, so the arg-max is the class
with the highest probability over the crops and softmax of the output gives those maxima,
renormalised.

Training: at each step every frame contributes one of its candidates, drawn at random, paired
with the frame's label in the usual contrastive loss (the trainer's batch shapes stay those of a
plain model; over epochs each crop and the frame are all seen). Boxes must stay on the hands, so
this model asks the trainer for training inputs without random crops, rotation or flips
(`geometric_augmentation = False`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

import clipmg.pose.fields  # noqa: F401  (registers the "hand_boxes" per-frame input)
from clipmg.errors import ModelError
from clipmg.models.base import ContrastiveModel, ImageSideWrapper
from clipmg.models.registry import create_model_from_config, register_backend
from clipmg.pose.hands import DEFAULT_MARGIN

MAX_HANDS = 2


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int, sampling_ratio: int = -1) -> torch.Tensor:
    """(B, 3, H, W) images, (B, K, 4+) boxes as fractions (x0, y0, x1, y1) -> (B, K, 3, size, size)
    crops, bilinear (averaging over the bin when shrinking)."""
    batch, count = boxes.shape[:2]
    height, width = images.shape[-2:]
    scale = boxes.new_tensor([width, height, width, height])
    pixels = boxes[..., :4].float() * scale
    index = torch.arange(batch, device=boxes.device, dtype=pixels.dtype).repeat_interleave(count)[:, None]
    rois = torch.cat([index, pixels.reshape(-1, 4)], dim=1).to(images.dtype)
    crops = roi_align(images, rois, output_size=(size, size), spatial_scale=1.0,
                      sampling_ratio=sampling_ratio, aligned=True)
    return crops.reshape(batch, count, images.shape[1], size, size)


def max_probability_log_scores(candidate_logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, K, C) logits of K candidates, (B, K) valid -> (B, C) log of each class's highest
    probability over the valid candidates."""
    log_probs = candidate_logits.float().log_softmax(dim=-1)
    log_probs = log_probs.masked_fill(~valid[..., None], float("-inf"))
    return log_probs.amax(dim=1)


@register_backend
class HandCropModel(ImageSideWrapper):
    backend = "hand_crops"
    wrapper_name = "hand crops"
    extra_inputs = ("hand_boxes",)
    geometric_augmentation = False

    def __init__(self, inner: ContrastiveModel, frame_size: int | None = None, include_full_frame: bool = True,
                 margin: float | None = None, keypoint_cache: str | None = None):
        super().__init__(inner)
        size = inner.preprocess_config.get("image_size", 224)
        if not isinstance(size, int):
            if len(set(size)) != 1:
                raise ModelError(f"hand crops need a square model input, the inner model takes {size}")
            size = int(size[0])
        self.crop_size = int(size)
        self.frame_size = int(frame_size or 2 * size)
        self.include_full_frame = bool(include_full_frame)
        self.input_settings = {"keypoints": keypoint_cache, "hand_margin": DEFAULT_MARGIN if margin is None
                               else float(margin)}
        self.model_config = {"backend": self.backend, "frame_size": self.frame_size,
                             "include_full_frame": self.include_full_frame, "inputs": dict(self.input_settings),
                             "inner": inner.model_config}
        self.preprocess_config = {**inner.preprocess_config, "image_size": self.frame_size}
        self.frozen_parts = set(inner.frozen_parts)

    @classmethod
    def wrap(cls, model: ContrastiveModel, include_full_frame: bool = True, margin: float | None = None,
             keypoint_cache: str | None = None) -> ContrastiveModel:
        """`model` scored on its hand crops (unchanged if it already is)."""
        if isinstance(model, HandCropModel):
            return model
        return cls(model, include_full_frame=include_full_frame, margin=margin, keypoint_cache=keypoint_cache)

    @classmethod
    def from_config(cls, cfg: dict, folder: str | Path | None = None) -> HandCropModel:
        cls.check_config_backend(cfg)
        inputs = cfg.get("inputs") or {}
        return cls(create_model_from_config(cfg["inner"], folder=folder), frame_size=cfg["frame_size"],
                   include_full_frame=cfg["include_full_frame"], margin=inputs.get("hand_margin"),
                   keypoint_cache=inputs.get("keypoints"))


    # --- candidates: hand crops and the full frame ---------------------------------------------------
    def candidates(self, images: torch.Tensor, hand_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 3, s, s) inputs of the inner model (the crops, then the full frame) and (B, K) valid."""
        if hand_boxes is None:
            raise ModelError("the hand-crop model needs each frame's hand boxes (the 'hand_boxes' input); build "
                             "the dataset with the model's extra fields")
        if hand_boxes.ndim != 3 or hand_boxes.shape[1:] != (MAX_HANDS, 5):
            raise ModelError(f"hand_boxes must be (batch, {MAX_HANDS}, 5), got {tuple(hand_boxes.shape)}")
        hand_boxes = hand_boxes.to(images.device)
        crops = crop_boxes(images, hand_boxes, self.crop_size)
        frame = images
        if images.shape[-1] != self.crop_size or images.shape[-2] != self.crop_size:
            frame = F.interpolate(images, size=(self.crop_size, self.crop_size), mode="bilinear",
                                  align_corners=False, antialias=True)
        hands = hand_boxes[..., 4] > 0.5
        use_frame = (~hands.any(dim=1)) | self.include_full_frame
        return torch.cat([crops, frame[:, None]], dim=1), torch.cat([hands, use_frame[:, None]], dim=1)

    def encode_candidates(self, images: torch.Tensor, hand_boxes: torch.Tensor,
                          normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, valid = self.candidates(images, hand_boxes)
        batch, count = valid.shape
        features = self.inner.encode_image(inputs.flatten(0, 1), normalize=normalize)
        return features.reshape(batch, count, -1), valid

    def encode_image(self, images: torch.Tensor, normalize: bool = True,
                     hand_boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Training: one random valid candidate per frame. Evaluation: the mean of the valid
        candidates' normalised features (for embeddings; classification uses `class_logits`)."""
        inputs, valid = self.candidates(images, hand_boxes)
        if self.training:
            pick = torch.multinomial(valid.float(), 1).squeeze(1)
            chosen = inputs[torch.arange(len(pick), device=pick.device), pick]
            return self.inner.encode_image(chosen, normalize=normalize)
        features = self.inner.encode_image(inputs.flatten(0, 1), normalize=True).reshape(*valid.shape, -1)
        mean = (features * valid[..., None]).sum(dim=1) / valid.sum(dim=1, keepdim=True)
        return F.normalize(mean, dim=-1) if normalize else mean

    def scoring_features(self, images: torch.Tensor, hand_boxes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, D) normalised features of the K candidates; rows of invalid candidates are 0
        (a normalised feature never is)."""
        features, valid = self.encode_candidates(images, hand_boxes, normalize=True)
        return features * valid[..., None].to(features.dtype)

    @staticmethod
    def candidate_validity(features: torch.Tensor) -> torch.Tensor:
        return features.abs().amax(dim=-1) > 0

    def logits_from_features(self, features: torch.Tensor, class_embeddings: torch.Tensor | None) -> torch.Tensor:
        if class_embeddings is None:
            raise ModelError("the hand-crop model scores classes against class embeddings; none given")
        logits = self.scale().float() * features.float() @ class_embeddings.float().T
        return max_probability_log_scores(logits, self.candidate_validity(features))

    def embedding_from_features(self, features: torch.Tensor) -> torch.Tensor:
        valid = self.candidate_validity(features)
        mean = (features * valid[..., None]).sum(dim=1) / valid.sum(dim=1, keepdim=True)
        return F.normalize(mean, dim=-1)
