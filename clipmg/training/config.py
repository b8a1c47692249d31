"""Training configuration: one dataclass, loaded from YAML (and, in `clipmg train`, overridden by
a flag per field). The resolved configuration is saved with each run and inside each checkpoint.

Each field carries its section and one-line help; each choice field takes its vocabulary from
the module that acts on it (`CHOICES`), and `validate` refuses a setting the chosen mode would
ignore.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clipmg.data.samplers import BALANCED_SAMPLERS
from clipmg.data.splits import SPLIT_BY
from clipmg.errors import DataError
from clipmg.inference.tta import TTA_MODES
from clipmg.losses import CLASS_WEIGHTINGS, LOSS_NAMES
from clipmg.metrics import VALIDATION_METRICS
from clipmg.models.hybrid import POOLINGS
from clipmg.models.registry import DEFAULT_MODEL, HEAD_KINDS, POSE_FUSIONS
from clipmg.models.supervised import is_supervised_name, wants_pretrained
from clipmg.models.temporal import TEMPORAL_HEADS
from clipmg.training.preemption import parse_signal
from clipmg.training.recipes import AUTO
from clipmg.training.texts import CONTRASTS, TEXT_SOURCES
from clipmg.utils import PRECISIONS, atomic_write_text

#: share of the frames an automatic split sets apart as its test part (clipmg train, split, compare)
DEFAULT_TEST_FRACTION = 0.1
#: the sections of the settings, in the order `clipmg train --help` shows them
SECTIONS = {
    "data": ("data", "the frames, their columns, the split, image decoding"),
    "model": ("model and wrappers", "the backend, its weights, the head, pose inputs, clips"),
    "text": ("text and prompts", "what the frames are contrasted with"),
    "loss": ("loss", "the contrastive or classification loss, and the class balance"),
    "optimisation": ("optimisation", "epochs, batches, learning rates, schedule, precision"),
    "tuning": ("fine-tuning tools", "EMA, layer decay, LoRA, gradient checkpointing (docs/fine_tuning.md), "
                                    "validation TTA"),
    "run": ("run", "where it is written, the seed, the device, what picks best/, augmentation, projector"),
}
#: each choice field's vocabulary, from its owner (the module that acts on the value)
CHOICES = {
    "split_by": SPLIT_BY,
    "loss": LOSS_NAMES,
    "contrast": CONTRASTS,
    "text_source": TEXT_SOURCES,
    "balanced_sampler": BALANCED_SAMPLERS,
    "scheduler": ("cosine", "plateau", "none"),  # built by training.optim (which imports this module)
    "precision": PRECISIONS,
    "pooling": POOLINGS,
    "head": HEAD_KINDS,
    "init_head": ("random", "zeroshot"),  # applied by training.model (which imports this module)
    "class_weighting": CLASS_WEIGHTINGS,
    "pose_fusion": POSE_FUSIONS,
    "tta": TTA_MODES,
    "temporal": TEMPORAL_HEADS,
    "monitor": VALIDATION_METRICS,
}


def _section(section: str):
    def setting(default, help: str):
        """A field of `section` with its one-line help (`clipmg train --help` adds the default)."""
        return field(default=default, metadata={"section": section, "help": help})

    return setting


_data, _model, _text, _loss, _optim, _tools, _run = map(_section, SECTIONS)


@dataclass
class TrainConfig:
    """Every setting of a run, flat (the names are the flags); each field's section and help are
    its metadata, so `clipmg train --help` groups and documents them from here."""

    metadata: str | None = _data(None, "train.xlsx or a .csv of frames (Path, Class, Video ID, Frame ID, Caption)")
    labels: str | None = _data(None, "Clip_label.csv: class id, class name")
    image_root: str | None = _data(None, "folder the Path column is relative to (default: training/ beside "
                                         "--metadata)")
    path_column: str = _data("Path", "metadata column of the image paths")
    class_column: str = _data("Class", "metadata column of the class ids")
    video_column: str = _data("Video ID", "metadata column naming each frame's clip")
    frame_column: str = _data("Frame ID", "metadata column ordering the frames of a clip")
    caption_column: str = _data("Caption", "metadata column of the frame captions")
    split: str | None = _data(None, "split CSV from `clipmg split` (default: split --metadata here)")
    split_by: str = _data("clip", "how a run without --split splits: by clip, subject, or frames (leaks)")
    val_fraction: float = _data(0.2, "share of the frames in validation (it chooses best/), without --split")
    test_fraction: float = _data(DEFAULT_TEST_FRACTION, "share of the frames (whole clips, or subjects with --split-by subject) "
                                       "set apart as a test part, without --split: it neither trains nor "
                                       "chooses best/, and the run's final figures come from it; 0 keeps none")
    subject_column: str | None = _data(None, "metadata column naming the subject, for --split-by subject")
    skip_bad_images: bool = _data(False, "count unreadable images and go on instead of failing")
    cache_frames: bool = _data(True, "decode each frame once per run, at the size training needs, into a "
                                     "memory-mapped cache in the temporary folder (false: every epoch)")
    workers: int | None = _data(None, "image decoding processes (default: chosen for the machine, "
                                      "clipmg.utils.default_workers)")
    model: str = _model(DEFAULT_MODEL, "openclip:<model>, hybrid, timm:<name> or torchvision:alexnet")
    pretrained: str | None = _model(None, "openclip: tag or weights file; timm/torchvision and hybrid: true/false "
                                          "(or a weights file)")
    image_pretrained: str | None = _model(None, "hybrid: the image tower's weights (true/false or a file), "
                                                "overriding --pretrained")
    text_pretrained: bool | None = _model(None, "hybrid: whether the text tower loads its pretrained weights, "
                                                "overriding --pretrained")
    image_encoder: str | None = _model(None, "hybrid: the image tower, timm:<name> (default timm:resnet50)")
    text_encoder: str | None = _model(None, "hybrid: the text tower, hf:<name or folder> "
                                            "(default hf:distilbert-base-uncased)")
    embed_dim: int | None = _model(None, "hybrid: size of the shared embedding (default: the backend's)")
    image_size: int | None = _model(None, "input size in pixels, overriding the model's")
    pooling: str = _model("cls", "hybrid: text features from the first token (cls) or the mean of the tokens")
    temperature: float | None = _model(None, "fixed contrastive temperature (default: the model's, learned)")
    learn_temperature: bool = _model(True, "learn the temperature (with --temperature: starting from it)")
    freeze_image: bool = _model(False, "keep the image tower's weights fixed")
    freeze_text: bool = _model(False, "keep the text tower's weights fixed")
    init_from: str | None = _model(None, "checkpoint to fine-tune from (its model: --model, --image-size ... "
                                         "must match it or be left out)")
    head: str = _model("contrastive", "contrastive: classes scored against prompt embeddings; linear: a linear "
                                      "classifier over the image backbone (timm:, torchvision:, a tower, a "
                                      "checkpoint)")
    init_head: str = _model("random", "linear head from a contrastive --init-from: zeroshot starts it at the class "
                                      "prompt embeddings")
    head_dropout: float = _model(0.0, "linear head: dropout before it")
    pose_fusion: str = _model("none", "fuse MediaPipe body and hand keypoints with the image embedding (the pose "
                                      "extra)")
    keypoints: str | None = _model(None, "keypoint cache folder (default: .clipmg_keypoints/ in the image root)")
    hand_crops: bool = _model(False, "classify frames by their MediaPipe hand crops (max probability over crops)")
    hand_margin: float = _model(0.3, "hand crops: box margin, times the box side")
    hand_full_frame: bool = _model(True, "hand crops: also score the full frame")
    clip_frames: int | None = _model(None, "classify clips of K frames (Video ID, in Frame ID order) with a "
                                           "temporal head over the frame embeddings")
    temporal: str = _model("mean", "clip model head: mean or attention pooling, or a transformer (sees the order)")
    prompts: str | None = _text(None, "prompt set file or name (default: the built-in templates)")
    text_source: str = _text("caption", "texts of the frames: their captions, their class prompt, or a prompt "
                                        "template drawn at random")
    loss: str = _loss("ce", "contrastive loss: label-aware cross-entropy, the original soft targets, or "
                            "Jensen-Shannon")
    contrast: str = _loss("classes", "contrast each frame with one text per class, or with the batch's texts")
    logit_adjust_tau: float = _loss(0.0, "logit adjustment against class imbalance: tau * log(class prior); 0 is "
                                         "off")
    balanced_sampler: str = _loss("none", "draw training frames class-balanced: 1/count (inverse) or "
                                          "1/sqrt(count)")
    class_weighting: str = _loss("none", "linear head: class-weighted cross-entropy (1/count or 1/sqrt(count))")
    focal_gamma: float = _loss(0.0, "linear head: focal loss gamma (0: cross-entropy)")
    epochs: int = _optim(10, "passes over the training frames")
    batch_size: int = _optim(64, "frames (or clips) per optimizer step and device")
    lr_image: float | str = _optim(AUTO, "image tower learning rate, or auto: from its weights (random, CLIP, "
                                         "ImageNet, checkpoint)")
    lr_text: float | str = _optim(AUTO, "text tower learning rate, or auto")
    lr_heads: float | str = _optim(AUTO, "projection/class heads learning rate, or auto")
    weight_decay: float = _optim(0.01, "AdamW weight decay (not on biases and norms)")
    scheduler: str = _optim("cosine", "learning-rate schedule: warm-up then cosine, halve on a plateau, or "
                                      "constant")
    warmup: float = _optim(0.05, "cosine warm-up: below 1 a share of the optimizer steps, 1 or more a number of "
                                 "steps")
    plateau_patience: int = _optim(2, "plateau schedule: epochs without progress before the rates halve")
    grad_accum: int = _optim(1, "batches accumulated per optimizer step")
    grad_clip: float | None = _optim(1.0, "clip the gradient norm to this (none: no clipping)")
    precision: str = _optim("auto", "mixed precision: auto is bf16 (fp16 without it) on CUDA and fp32 elsewhere")
    max_steps_per_epoch: int | None = _optim(None, "stop each epoch after this many steps (smoke tests)")
    ema_decay: float | None = _tools(None, "keep an EMA of the weights (e.g. 0.999), validated beside them; the "
                                           "better becomes best/")
    layer_decay: float = _tools(1.0, "layer-wise learning-rate decay of the towers (e.g. 0.75); 1 is off")
    lora_rank: int = _tools(0, "LoRA adapters of this rank on the trained towers (their weights frozen); 0 is off")
    lora_alpha: float | None = _tools(None, "LoRA scale numerator (default: the rank)")
    lora_targets: str | None = _tools(None, "LoRA layers: linear, attention, conv or module names, comma-separated "
                                            "(default linear,attention)")
    grad_checkpointing: bool = _tools(False, "recompute the towers' activations in the backward pass (less "
                                             "memory, more compute)")
    tta: str = _tools("none", "test-time augmentation of validation: a frame and its mirror image, or five crops")
    output: str = _run("checkpoints/run", "run folder: best/, last/, config.yaml, split.csv, metrics")
    seed: int = _run(42, "seed of the split, the initialisation and the batches")
    device: str = _run("auto", "auto, cpu, cuda, cuda:1 ...")
    monitor: str = _run("top1", "validation metric that picks best/ and early stopping")
    patience: int | None = _run(None, "early stopping: epochs without a better --monitor (default: never stop)")
    save_every_steps: int | None = _run(None, "also save last/ (resumable) every N optimizer steps")
    preempt_signal: str | None = _run(None, "a signal that, like SIGTERM, stops training after the current step "
                                            "with last/ saved (e.g. USR1)")
    tensorboard: bool = _run(True, "write TensorBoard logs to the run folder")
    hflip: bool = _run(False, "training augmentation: mirror frames at random")
    embed_every: int | None = _run(None, "write a projector of the validation frames every N epochs")
    embed_max_images: int = _run(500, "projector: at most this many frames (class-stratified)")

    def validate(self) -> TrainConfig:
        if self.monitor not in VALIDATION_METRICS:
            raise DataError(f"config: monitor={self.monitor!r} is not a validation metric; choose from "
                            f"{', '.join(VALIDATION_METRICS)}")
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
        if not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise DataError(f"config: test_fraction must be in [0, 1) and leave frames for training beside "
                            f"val_fraction, got {self.test_fraction}")
        for name in ("lr_image", "lr_text", "lr_heads"):
            value = getattr(self, name)
            if value != AUTO and not (isinstance(value, (int, float)) and value >= 0):
                raise DataError(f"config: {name} must be a number (0 or more) or 'auto', got {value!r}")
        if self.warmup < 0:
            raise DataError(f"config: warmup must be 0 or more, got {self.warmup}")
        if self.workers is not None and self.workers < 0:
            raise DataError(f"config: workers must be 0 or more, got {self.workers}")
        if is_supervised_name(self.model) and self.head != "linear" and not self.init_from:
            raise DataError(f"--model {self.model} is an image backbone without a text tower: train it with "
                            "--head linear")
        self._refuse_ignored_settings()
        return self

    def given(self, *names: str) -> list[str]:
        """The settings among `names` set to something other than their default."""
        return [name for name in names if getattr(self, name) != DEFAULTS[name]]

    def _refuse_ignored_settings(self) -> None:
        """A setting the chosen mode would not use is an error, never silently dropped (the rules
        across sections; `--init-from`'s are checked against the checkpoint, training.model)."""
        for names, mode, reason in self._unused_settings():
            ignored = self.given(*names)
            if ignored:
                shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in ignored)
                raise DataError(f"config: {shown} would be ignored: {reason}; drop {'it' if len(ignored) == 1 else 'them'}"
                                f" or {mode}")

    def _unused_settings(self):
        """(settings, the mode that uses them, why they are unused now) of each rule that applies."""
        if not self.init_from and self.model != "hybrid":
            yield HYBRID_SETTINGS, "use --model hybrid", f"they set up --model hybrid, not {self.model}"
        if not self.init_from and is_supervised_name(self.model):
            yield ("temperature", "learn_temperature"), "use a contrastive model", \
                f"{self.model} has no contrastive temperature"
        if self.head == "linear":
            yield ("loss", "contrast", "text_source"), "use --head contrastive", \
                "a linear head trains with (class-weighted, focal) cross-entropy, not a contrastive loss"
        else:
            yield ("class_weighting", "focal_gamma", "head_dropout"), "use --head linear", \
                "they shape a linear head's loss, and the head is contrastive"
            if self.contrast == "batch":
                yield ("logit_adjust_tau",), "use --contrast classes", "logit adjustment needs --contrast classes"
        if self.pose_fusion == "none" and not self.hand_crops:
            yield ("keypoints",), "use --pose-fusion or --hand-crops", "only pose fusion and hand crops read keypoints"
        if not self.hand_crops:
            yield ("hand_margin", "hand_full_frame"), "use --hand-crops", "they set up hand crops"
        if not self.lora_rank:
            yield ("lora_alpha", "lora_targets"), "give --lora-rank", "LoRA is off (lora_rank 0)"
        if self.scheduler != "plateau":
            yield ("plateau_patience",), "use --scheduler plateau", f"the scheduler is {self.scheduler}"
        if self.split:
            yield ("split_by", "val_fraction", "test_fraction", "subject_column"), "drop --split", \
                f"the split comes from {self.split}"
        elif self.split_by != "subject":
            yield ("subject_column",), "use --split-by subject", "only a split by subject reads it"
        if not self.embed_every:
            yield ("embed_max_images",), "give --embed-every", "no projector is written without --embed-every"

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


DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
#: what `model_options` passes to `--model hybrid` alone
HYBRID_SETTINGS = ("image_encoder", "text_encoder", "image_pretrained", "text_pretrained", "pooling", "embed_dim")
#: what builds a model by name; with --init-from the checkpoint's model is used instead (training.model)
BACKEND_SETTINGS = ("model", "pretrained", "image_size", "temperature", "learn_temperature", *HYBRID_SETTINGS)


#: settings of earlier versions -> (their new name, how the value carries over)
RENAMED = {"warmup_steps": ("warmup", float)}


#: settings added later, and the value that gives a run saved before them its old behaviour
SETTINGS_OF_EARLIER_RUNS = {"test_fraction": 0.0, "cache_frames": False}


def with_settings_of_its_time(record: dict) -> dict:
    """A saved run's settings, completed so that the run continues as it started: a run saved
    before a setting existed gets the value that reproduces it (no test part, no frame cache)."""
    record = dict(record)
    for name, value in SETTINGS_OF_EARLIER_RUNS.items():
        if name not in record and not (name == "test_fraction" and record.get("split")):
            record[name] = value
    return record


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
