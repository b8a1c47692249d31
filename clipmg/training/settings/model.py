"""The model section: the backend, its weights, the head, pose inputs, hand crops and clips. It
becomes a `clipmg.models.ModelSpec` (`spec`), which the backend maps to its own options; which
backend reads which setting is the models' to say (`registry.unread_settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clipmg.errors import DataError
from clipmg.models.registry import DEFAULT_MODEL, has_classifier_head, unread_settings
from clipmg.models.spec import SPEC_SETTINGS, ModelSpec, WrapSpec
from clipmg.training.settings.base import Settings, Unused, at_least, setting

#: what builds a model by name; with --init-from the checkpoint's model is used instead (training.model)
BACKEND_SETTINGS = ("model", *SPEC_SETTINGS)


@dataclass
class ModelSettings(Settings):
    section: ClassVar[str] = "model"

    model: str = setting(DEFAULT_MODEL, "openclip:<model>, hybrid, timm:<name> or torchvision:alexnet")
    pretrained: str | None = setting(None, "openclip: tag or weights file; timm/torchvision and hybrid: true/false "
                                           "(or a weights file)")
    image_pretrained: str | None = setting(None, "hybrid: the image tower's weights (true/false or a file), "
                                                 "overriding --pretrained")
    text_pretrained: bool | None = setting(None, "hybrid: whether the text tower loads its pretrained weights, "
                                                 "overriding --pretrained")
    image_encoder: str | None = setting(None, "hybrid: the image tower, timm:<name> (default timm:resnet50)")
    text_encoder: str | None = setting(None, "hybrid: the text tower, hf:<name or folder> "
                                             "(default hf:distilbert-base-uncased)")
    embed_dim: int | None = setting(None, "hybrid: size of the shared embedding (default: the backend's)")
    image_size: int | None = setting(None, "input size in pixels, overriding the model's")
    pooling: str = setting("cls", "hybrid: text features from the first token (cls) or the mean of the tokens")
    temperature: float | None = setting(None, "fixed contrastive temperature (default: the model's, learned)")
    learn_temperature: bool = setting(True, "learn the temperature (with --temperature: starting from it)")
    freeze_image: bool = setting(False, "keep the image tower's weights fixed")
    freeze_text: bool = setting(False, "keep the text tower's weights fixed")
    init_from: str | None = setting(None, "checkpoint to fine-tune from (its model: --model, --image-size ... "
                                          "must match it or be left out)")
    head: str = setting("contrastive", "contrastive: classes scored against prompt embeddings; linear: a linear "
                                       "classifier over the image backbone (timm:, torchvision:, a tower, a "
                                       "checkpoint)")
    init_head: str = setting("random", "linear head from a contrastive --init-from: zeroshot starts it at the "
                                       "class prompt embeddings")
    head_dropout: float = setting(0.0, "linear head: dropout before it")
    pose_fusion: str = setting("none", "fuse MediaPipe body and hand keypoints with the image embedding (the pose "
                                       "extra)")
    keypoints: str | None = setting(None, "keypoint cache folder (default: .clipmg_keypoints/ in the image root)")
    hand_crops: bool = setting(False, "classify frames by their MediaPipe hand crops (max probability over crops)")
    hand_margin: float = setting(0.3, "hand crops: box margin, times the box side")
    hand_full_frame: bool = setting(True, "hand crops: also score the full frame")
    clip_frames: int | None = setting(None, "classify clips of K frames (Video ID, in Frame ID order) with a "
                                            "temporal head over the frame embeddings")
    temporal: str = setting("mean", "clip model head: mean or attention pooling, or a transformer (sees the order)")

    def check(self) -> None:
        if self.init_head == "zeroshot" and (self.head != "linear" or not self.init_from):
            raise DataError("config: init_head=zeroshot needs head=linear and init_from=<contrastive checkpoint>")
        if self.pose_fusion != "none" and self.hand_crops:
            raise DataError("config: pose_fusion and hand_crops are separate approaches; choose one")
        at_least("clip_frames", self.clip_frames, 1, optional=True)
        if self.temporal != "mean" and not self.clip_frames:
            raise DataError(f"config: temporal={self.temporal!r} is the head of a clip model: give clip_frames "
                            "(--clip-frames K) too")
        if self.clip_frames and self.hand_crops:
            raise DataError("config: hand_crops and clip_frames are separate approaches; choose one")
        at_least("hand_margin", self.hand_margin, 0)
        if has_classifier_head(self.model) and self.head != "linear" and not self.init_from:
            raise DataError(f"--model {self.model} is an image backbone without a text tower: train it with "
                            "--head linear")

    def unused_settings(self):
        rules: list[Unused] = []
        if not self.init_from:
            rules += [(settings, f"use --model {readers}", f"not read by --model {self.model}")
                      for settings, readers in unread_settings(self.model)]
        if self.pose_fusion == "none" and not self.hand_crops:
            rules.append((("keypoints",), "use --pose-fusion or --hand-crops",
                          "only pose fusion and hand crops read keypoints"))
        if not self.hand_crops:
            rules.append((("hand_margin", "hand_full_frame"), "use --hand-crops", "they set up hand crops"))
        return iter(rules)

    def wrap_spec(self, num_classes: int) -> WrapSpec:
        """The wrappers: head, pose fusion, hand crops, clip model."""
        return WrapSpec(head=self.head, num_classes=num_classes, head_dropout=self.head_dropout,
                        pose_fusion=self.pose_fusion, keypoint_cache=self.keypoints, hand_crops=self.hand_crops,
                        hand_margin=self.hand_margin, hand_full_frame=self.hand_full_frame,
                        clip_frames=self.clip_frames, temporal=self.temporal)

    def spec(self, num_classes: int) -> ModelSpec:
        """The model to build by name (`clipmg.models.create_model_from_spec`)."""
        return ModelSpec(name=self.model, **{name: getattr(self, name) for name in SPEC_SETTINGS},
                         wrap=self.wrap_spec(num_classes))
