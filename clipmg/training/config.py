"""Training configuration: one dataclass, loaded from YAML (and, in `clipmg train`, overridden by
a flag per field). The resolved configuration is saved with each run and inside each checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clipmg.errors import DataError
from clipmg.inference.tta import TTA_MODES
from clipmg.metrics import VALIDATION_METRICS
from clipmg.models.supervised import is_supervised_name, wants_pretrained
from clipmg.training.preemption import parse_signal
from clipmg.training.recipes import AUTO
from clipmg.utils import atomic_write_text

CHOICES = {
    "split_by": ("clip", "subject", "frames"),
    "loss": ("ce", "soft_ce", "js"),
    "contrast": ("batch", "classes"),
    "text_source": ("caption", "prompt", "random_template"),
    "balanced_sampler": ("none", "inverse", "sqrt"),
    "scheduler": ("cosine", "plateau", "none"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "pooling": ("cls", "mean"),
    "head": ("contrastive", "linear"),
    "init_head": ("random", "zeroshot"),
    "class_weighting": ("none", "inverse", "sqrt"),
    "pose_fusion": ("none", "concat", "gated"),
    "tta": TTA_MODES,
    "temporal": ("mean", "attention", "transformer"),
}


@dataclass
class TrainConfig:
    # data
    metadata: str | None = None
    labels: str | None = None
    image_root: str | None = None
    path_column: str = "Path"
    class_column: str = "Class"
    video_column: str = "Video ID"
    frame_column: str = "Frame ID"
    caption_column: str = "Caption"
    split: str | None = field(default=None, metadata={"help": "split CSV from `clipmg split`"})
    split_by: str = "clip"
    val_fraction: float = 0.2
    subject_column: str | None = None
    skip_bad_images: bool = False
    workers: int | None = field(default=None, metadata={
        "help": "image decoding processes (default: chosen for the machine, see training.data.default_workers)"})
    # model
    model: str = "openclip:clipmg-small"
    pretrained: str | None = field(default=None, metadata={
        "help": "openclip: tag or weights file; timm/torchvision and hybrid: true/false (or a weights file)"})
    image_pretrained: str | None = field(default=None, metadata={
        "help": "hybrid: the image tower's weights (true/false or a file), overriding --pretrained"})
    text_pretrained: bool | None = field(default=None, metadata={
        "help": "hybrid: whether the text tower loads its pretrained weights, overriding --pretrained"})
    image_encoder: str | None = field(default=None, metadata={"help": "hybrid: timm:<name>"})
    text_encoder: str | None = field(default=None, metadata={"help": "hybrid: hf:<name or folder>"})
    embed_dim: int | None = None
    image_size: int | None = field(default=None, metadata={"help": "override the model's input size"})
    pooling: str = "cls"
    temperature: float | None = field(default=None, metadata={"help": "fixed temperature"})
    learn_temperature: bool = True
    freeze_image: bool = False
    freeze_text: bool = False
    init_from: str | None = field(default=None, metadata={"help": "checkpoint to fine-tune from"})
    head: str = field(default="contrastive", metadata={
        "help": "contrastive: score classes against prompt embeddings; linear: a linear classifier over the "
                "classes on the image backbone (--model timm:<name>, torchvision:alexnet, or an openclip/hybrid "
                "model's image tower, or --init-from a contrastive checkpoint)"})
    init_head: str = field(default="random", metadata={
        "help": "linear head from --init-from a contrastive checkpoint: zeroshot starts it at the class prompt "
                "embeddings (logits = the zero-shot classifier's)"})
    head_dropout: float = 0.0
    # pose inputs (clipmg.pose; keypoints need the `pose` extra, MediaPipe)
    pose_fusion: str = field(default="none", metadata={
        "help": "fuse MediaPipe body and hand keypoints with the image embedding: concat or gated"})
    keypoints: str | None = field(default=None, metadata={
        "help": "keypoint cache folder (default: .clipmg_keypoints/ in the image root)"})
    hand_crops: bool = field(default=False, metadata={
        "help": "classify frames by their MediaPipe hand crops (max probability over crops)"})
    hand_margin: float = field(default=0.3, metadata={"help": "hand box margin, times the box side"})
    hand_full_frame: bool = field(default=True, metadata={"help": "hand crops: also score the full frame"})
    # clips (clipmg.models.temporal): K frames of a clip (Video ID, in Frame ID order) at a time
    clip_frames: int | None = field(default=None, metadata={
        "help": "classify clips of K frames with a temporal head over the frame embeddings (training batches "
                "clips; test.py then writes clip_predictions.csv)"})
    temporal: str = field(default="mean", metadata={
        "help": "clip model head: mean (pooling), attention (pooling), transformer (sees the frame order)"})
    # text side
    prompts: str | None = field(default=None, metadata={"help": "prompt set file or name"})
    text_source: str = "caption"
    # loss
    loss: str = "ce"
    contrast: str = "classes"
    logit_adjust_tau: float = 0.0
    balanced_sampler: str = "none"
    class_weighting: str = field(default="none", metadata={"help": "linear head: class-weighted cross-entropy"})
    focal_gamma: float = field(default=0.0, metadata={"help": "linear head: focal loss gamma (0: cross-entropy)"})
    # optimisation
    epochs: int = 10
    batch_size: int = 64
    lr_image: float | str = field(default=AUTO, metadata={
        "help": "image tower learning rate, or auto: from its weights (random, CLIP, ImageNet, checkpoint)"})
    lr_text: float | str = field(default=AUTO, metadata={"help": "text tower learning rate, or auto"})
    lr_heads: float | str = field(default=AUTO, metadata={"help": "projection/class heads learning rate, or auto"})
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup: float = field(default=0.05, metadata={
        "help": "learning-rate warm-up: below 1 a share of the optimizer steps, 1 or more a number of steps"})
    plateau_patience: int = 2
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    precision: str = "auto"
    max_steps_per_epoch: int | None = None
    # fine-tuning tools (docs/fine_tuning.md)
    ema_decay: float | None = field(default=None, metadata={
        "help": "keep an EMA of the weights (e.g. 0.999), validated beside them; the better becomes best/"})
    layer_decay: float = field(default=1.0, metadata={
        "help": "layer-wise learning-rate decay of the towers (e.g. 0.75): a block's rate is its part's times "
                "decay ** (blocks above it); 1 is off"})
    lora_rank: int = field(default=0, metadata={
        "help": "LoRA adapters of this rank on the trained towers (their weights frozen); 0 is off"})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA scale numerator (default: the rank)"})
    lora_targets: str | None = field(default=None, metadata={
        "help": "LoRA layers: linear, attention, conv or module names, comma-separated (default linear,attention)"})
    grad_checkpointing: bool = field(default=False, metadata={
        "help": "recompute the towers' activations in the backward pass (less memory, more compute)"})
    tta: str = field(default="none", metadata={"help": "test-time augmentation of validation: none, flip, crops"})
    # run
    output: str = "checkpoints/run"
    seed: int = 42
    device: str = "auto"
    monitor: str = "top1"
    patience: int | None = field(default=None, metadata={"help": "early stopping patience"})
    save_every_steps: int | None = None
    preempt_signal: str | None = field(default=None, metadata={
        "help": "a signal that, like SIGTERM, stops training after the current step with last/ saved (e.g. USR1)"})
    tensorboard: bool = True
    hflip: bool = False
    embed_every: int | None = field(default=None, metadata={"help": "projector of validation frames every N epochs"})
    embed_max_images: int = 500

    def validate(self) -> TrainConfig:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise DataError(f"config: {name}={value!r} is not one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise DataError(f"config: {name} must be at least 1, got {getattr(self, name)}")
        parse_signal(self.preempt_signal)
        for name in ("embed_every", "save_every_steps", "patience", "max_steps_per_epoch"):
            value = getattr(self, name, None)
            if value is not None and value < (0 if name == "patience" else 1):
                raise DataError(f"config: {name} must be positive, got {value}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise DataError(f"config: ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.layer_decay <= 1:
            raise DataError(f"config: layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.lora_rank < 0 or (self.lora_alpha is not None and self.lora_alpha <= 0):
            raise DataError(f"config: lora_rank must be 0 (off) or more and lora_alpha positive, got "
                            f"{self.lora_rank} and {self.lora_alpha}")
        if self.focal_gamma < 0:
            raise DataError(f"config: focal_gamma must be 0 or more, got {self.focal_gamma}")
        if self.init_head == "zeroshot" and (self.head != "linear" or not self.init_from):
            raise DataError("config: init_head=zeroshot needs head=linear and init_from=<contrastive checkpoint>")
        if self.pose_fusion != "none" and self.hand_crops:
            raise DataError("config: pose_fusion and hand_crops are separate approaches; choose one")
        if self.clip_frames is not None and self.clip_frames < 1:
            raise DataError(f"config: clip_frames must be at least 1, got {self.clip_frames}")
        if self.temporal != "mean" and not self.clip_frames:
            raise DataError(f"config: temporal={self.temporal!r} is the head of a clip model: give clip_frames "
                            "(--clip-frames K) too")
        if self.clip_frames and self.hand_crops:
            raise DataError("config: hand_crops and clip_frames are separate approaches; choose one")
        if self.hand_margin < 0:
            raise DataError(f"config: hand_margin must be at least 0, got {self.hand_margin}")
        if not 0 < self.val_fraction < 1:
            raise DataError(f"config: val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("lr_image", "lr_text", "lr_heads"):
            value = getattr(self, name)
            if value != AUTO and not (isinstance(value, (int, float)) and value >= 0):
                raise DataError(f"config: {name} must be a number (0 or more) or 'auto', got {value!r}")
        if self.warmup < 0:
            raise DataError(f"config: warmup must be 0 or more, got {self.warmup}")
        if self.workers is not None and self.workers < 0:
            raise DataError(f"config: workers must be 0 or more, got {self.workers}")
        if self.monitor not in VALIDATION_METRICS:
            raise DataError(f"config: monitor={self.monitor!r} is not a validation metric; choose from "
                            f"{', '.join(VALIDATION_METRICS)}")
        if is_supervised_name(self.model) and self.head != "linear" and not self.init_from:
            raise DataError(f"--model {self.model} is an image backbone without a text tower: train it with "
                            "--head linear")
        return self

    def wrapper_options(self, num_classes: int) -> dict:
        """`clipmg.models.compose_model` options: head, pose fusion, hand crops, clip model."""
        return {"head": self.head, "num_classes": num_classes, "head_dropout": self.head_dropout,
                "pose_fusion": self.pose_fusion, "hand_crops": self.hand_crops,
                "hand_full_frame": self.hand_full_frame, "hand_margin": self.hand_margin,
                "keypoint_cache": self.keypoints, "clip_frames": self.clip_frames,
                "temporal": self.temporal if self.clip_frames else None}

    def model_options(self, num_classes: int) -> dict:
        """`clipmg.models.create_model(self.model, **options)`: the backend's settings, then the
        wrappers'. A hybrid model's towers are pretrained only when `pretrained` says so."""
        options = {"image_size": self.image_size}
        if self.model == "hybrid":
            options.update(image=self.image_encoder or "timm:resnet50",
                           text=self.text_encoder or "hf:distilbert-base-uncased",
                           pretrained=bool(wants_pretrained(self.pretrained)), pooling=self.pooling)
            if self.image_pretrained is not None:
                options["image_pretrained"] = wants_pretrained(self.image_pretrained)
            if self.text_pretrained is not None:
                options["text_pretrained"] = self.text_pretrained
            if self.embed_dim:
                options["embed_dim"] = self.embed_dim
        else:
            options["pretrained"] = self.pretrained
        if not is_supervised_name(self.model):
            options.update(temperature=self.temperature, learn_temperature=self.learn_temperature)
        return {**options, **self.wrapper_options(num_classes)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: settings of earlier versions -> (their new name, how the value carries over)
RENAMED = {"warmup_steps": ("warmup", float)}


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    for old, (new, convert) in RENAMED.items():
        if old in values and new not in values:
            values[new] = convert(values.pop(old))
    unknown = sorted(set(values) - known)
    if unknown:
        raise DataError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return TrainConfig(**values)


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise DataError(f"config file {path} must hold a mapping of settings")
    return values


def save_config(config: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
