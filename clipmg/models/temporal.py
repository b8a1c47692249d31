"""`ClipModel`: a model that classifies clips of K frames, by a temporal head over the per-frame
embeddings of the model it wraps.

The wrapped model (`inner`: open_clip, hybrid, pose fusion, or a linear-head model) encodes each
frame into what it scores (`scoring_features`: the normalised image embedding, or a linear
head's input); the temporal head pools the K frame embeddings of a clip into one, which the
inner model then scores as it would a frame: against the class prompts (normalised again, the
same losses), or with its linear head. Heads (`temporal=`):

- "mean": the mean of the frame embeddings; no parameters. Its class scores order as the mean of
  the frames' logits does (a plain model's logits are linear in the embedding up to the
  normalisation, which scales every class alike; a linear head's are linear).
- "attention": a weighted mean, the weights a softmax over a small MLP's score of each frame;
  order-free, it learns which frames matter.
- "transformer": frame-position embeddings, a small pre-norm transformer encoder over the K
  frames, then the mean of the frames plus a projection of the encoder's output. It sees the
  order of the frames (a hand moving up to the face against one moving down from it).

Every head starts as mean pooling (the attention scorer's and the transformer projection's last
layers start at zero), so wrapping a trained frame model starts from its own frame averaging.
The head's parameters are "heads" (trained at `lr_heads`, never frozen).

Training reads K frames of a clip: augmented apart under the mean head
(`augments_frames_apart`), with one draw for the clip under the others, which see how the frames
differ. Evaluation (validation, the run's test part, test.py) reads every frame of a clip under
the mean head, whose prediction then uses all that the clip shows, and the K frames of
`clipmg.data.clip_positions` under the others (`reads_whole_clip`).

Input: clips (B, K, 3, S, S) with extra inputs (B, K, ...); a batch of frames (B, 3, S, S) is
taken as B clips of one frame (what per-frame predictions, embeddings and the projector use).
`frame_features` and `clip_features` split `scoring_features` in two so that test.py encodes
each frame once for both its per-frame and its clip predictions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from clipmg.errors import ModelError
from clipmg.models.base import ContrastiveModel, InnerModelWrapper
from clipmg.models.registry import create_model_from_config, register_backend

TEMPORAL_HEADS = ("mean", "attention", "transformer")
DEFAULT_LAYERS = 1


class MeanPool(nn.Module):
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)


class AttentionPool(nn.Module):
    """(B, K, D) -> (B, D): softmax-weighted mean, the weights scored per frame by an MLP."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = max(32, dim // 4)
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.score[-1].weight)
        nn.init.zeros_(self.score[-1].bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        weights = self.score(frames).squeeze(-1).softmax(dim=1)
        return (weights.unsqueeze(-1) * frames).sum(dim=1)


class TemporalTransformer(nn.Module):
    """(B, K, D) -> (B, D): mean over frames of frame + out(encoder(frames + positions))."""

    def __init__(self, dim: int, clip_frames: int, layers: int = DEFAULT_LAYERS):
        super().__init__()
        heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.positions = nn.Parameter(torch.zeros(clip_frames, dim))
        nn.init.normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        count = frames.shape[1]
        if count > len(self.positions):
            raise ModelError(f"this temporal transformer has positions for {len(self.positions)} frames; "
                             f"the clip has {count}")
        encoded = self.encoder(frames + self.positions[:count].to(frames.dtype))
        return (frames + self.out(encoded)).mean(dim=1)


def temporal_head(temporal: str, dim: int, clip_frames: int, layers: int = DEFAULT_LAYERS) -> nn.Module:
    if temporal == "mean":
        return MeanPool()
    if temporal == "attention":
        return AttentionPool(dim)
    if temporal == "transformer":
        return TemporalTransformer(dim, clip_frames, layers)
    raise ModelError(f"temporal head must be one of {', '.join(TEMPORAL_HEADS)}, got {temporal!r}")


def feature_dim(model: ContrastiveModel) -> int:
    """The size of `model.scoring_features` per frame (a linear head's input, or the embedding)."""
    config = model.model_config
    if model.has_classifier_head:
        return int(config["feature_dim"])
    if config.get("embed_dim"):
        return int(config["embed_dim"])
    with torch.no_grad():
        return int(model.encode_text(["a"]).shape[-1])


@register_backend
class ClipModel(InnerModelWrapper):
    backend = "clip"

    def __init__(self, inner: ContrastiveModel, clip_frames: int, temporal: str = "mean",
                 layers: int = DEFAULT_LAYERS):
        super().__init__()
        if temporal not in TEMPORAL_HEADS:
            raise ModelError(f"temporal head must be one of {', '.join(TEMPORAL_HEADS)}, got {temporal!r}")
        if int(clip_frames) < 1:
            raise ModelError(f"clip_frames must be at least 1, got {clip_frames}")
        self.clip_frames, self.temporal, self.layers = int(clip_frames), temporal, int(layers)
        self._adopt(inner)
        self.head = temporal_head(temporal, self.feature_dim, self.clip_frames, self.layers)

    def _adopt(self, inner: ContrastiveModel) -> None:
        if inner.backend in ("clip", "hand_crops"):
            raise ModelError("a clip model takes one embedding per frame: it cannot wrap "
                             + ("another clip model" if inner.backend == "clip" else
                                "hand crops (several candidates per frame); choose one of the two"))
        self.inner = inner
        self.feature_dim = feature_dim(inner)
        self.has_classifier_head = inner.has_classifier_head
        self.extra_inputs = tuple(inner.extra_inputs)
        self.geometric_augmentation = inner.geometric_augmentation
        self.input_settings = dict(inner.input_settings)
        self.tower_origins = dict(inner.tower_origins)
        self.preprocess_config = dict(inner.preprocess_config)
        self.frozen_parts = set(inner.frozen_parts)
        self.model_config = {"backend": self.backend, "temporal": self.temporal, "clip_frames": self.clip_frames,
                             "layers": self.layers, "feature_dim": self.feature_dim, "inner": inner.model_config}

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: dict, folder: str | Path | None = None) -> ClipModel:
        cls.check_config_backend(cfg)
        inner = create_model_from_config(cfg["inner"], folder=folder)
        return cls(inner, clip_frames=cfg["clip_frames"], temporal=cfg["temporal"],
                   layers=cfg.get("layers", DEFAULT_LAYERS))

    def around(self, inner: ContrastiveModel, clip_frames: int | None = None,
               temporal: str | None = None) -> ClipModel:
        """This clip model (its temporal head kept) around `inner` (e.g. its own inner model with a
        linear head added), for `clip_frames` frames when given."""
        if temporal is not None and temporal != self.temporal:
            raise ModelError(f"the model has a {self.temporal!r} temporal head; it cannot become {temporal!r} "
                             f"(train a new clip model from a frame checkpoint instead)")
        if clip_frames and int(clip_frames) != self.clip_frames:
            if self.temporal == "transformer":
                raise ModelError(f"the temporal transformer has frame positions for {self.clip_frames} frames; "
                                 f"it cannot take {clip_frames}")
            self.clip_frames = int(clip_frames)
        self._adopt(inner)
        return self

    # --- the inner model's linear head ------------------------------------------------------------
    @property
    def backbone(self):
        """A linear-head inner model's backbone (for a zero-shot head)."""
        return self.inner.backbone

    @property
    def classifier(self) -> nn.Linear:
        """A linear-head inner model's head (it scores the pooled clip embedding)."""
        return self.inner.classifier

    def init_zero_shot_head(self, class_embeddings: torch.Tensor, scale) -> None:
        self.inner.init_zero_shot_head(class_embeddings, scale)

    # --- frames -> clip -----------------------------------------------------------------------------
    @property
    def augments_frames_apart(self) -> bool:
        """Whether training draws each frame's augmentation apart (the mean head pools frames as
        a set, so there is no movement between them for one draw per clip to keep)."""
        return self.temporal == "mean"

    @property
    def reads_whole_clip(self) -> bool:
        """Whether evaluation pools every frame of a clip (the mean head, which takes any number
        of frames, as TSN tests on more frames than it trains on) rather than the K frames of
        `clipmg.data.clip_positions` (the heads that learned weights over K)."""
        return self.temporal == "mean"

    @staticmethod
    def _as_clips(images: torch.Tensor, extras: dict) -> tuple[torch.Tensor, dict, tuple[int, int]]:
        """Clips (B, K, ...) or frames (B, ...) as frames (B * K, ...), and (B, K)."""
        if images.ndim == 4:
            return images, extras, (images.shape[0], 1)
        if images.ndim != 5:
            raise ModelError(f"a clip model takes clips (batch, frames, 3, H, W) or frames (batch, 3, H, W), got "
                             f"{tuple(images.shape)}")
        shape = tuple(images.shape[:2])
        return images.flatten(0, 1), {key: value.flatten(0, 1) for key, value in extras.items()}, shape

    def frame_features(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) frames -> (N, D): what the temporal head takes (the inner model's scoring
        features: normalised embeddings, or a linear head's input)."""
        return self.inner.scoring_features(images, **extras)

    def pool(self, frame_features: torch.Tensor) -> torch.Tensor:
        """(B, K, D) frame features -> (B, D) clip embedding (not normalised)."""
        return self.head(frame_features)

    def clip_features(self, frame_features: torch.Tensor) -> torch.Tensor:
        """(B, K, D) frame features -> (B, D) scoring features of the clips."""
        pooled = self.pool(frame_features)
        return pooled if self.has_classifier_head else nn.functional.normalize(pooled, dim=-1)

    def encode_image(self, images: torch.Tensor, normalize: bool = True, **extras: torch.Tensor) -> torch.Tensor:
        frames, extras, shape = self._as_clips(images, extras)
        pooled = self.pool(self.frame_features(frames, **extras).unflatten(0, shape))
        return nn.functional.normalize(pooled, dim=-1) if normalize else pooled

    def forward(self, images: torch.Tensor, texts: list[str] | None = None, **extras: torch.Tensor):
        """A linear-head inner model: (B, C) logits of the clips; otherwise (clip embeddings, text
        embeddings, scale) as any contrastive model."""
        if self.has_classifier_head:
            return self.inner.logits_from_features(self.scoring_features(images, **extras))
        return self.encode_image(images, **extras), self.encode_text(texts), self.scale()

    def scoring_features(self, images: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        frames, extras, shape = self._as_clips(images, extras)
        return self.clip_features(self.frame_features(frames, **extras).unflatten(0, shape))

    def logits_from_features(self, features: torch.Tensor, class_embeddings: torch.Tensor | None = None
                             ) -> torch.Tensor:
        return self.inner.logits_from_features(features, class_embeddings)

    def embedding_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.inner.embedding_from_features(features)

    def class_logits(self, images: torch.Tensor, class_embeddings: torch.Tensor | None = None,
                     **extras: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.scoring_features(images, **extras), class_embeddings)

    # --- training helpers ---------------------------------------------------------------------------
    def freeze(self, image: bool = False, text: bool = False) -> None:
        """The inner model's towers as it freezes them; the temporal head always trains."""
        self.inner.freeze(image=image, text=text)
        self.frozen_parts = set(self.inner.frozen_parts)
        self.train(self.training)
