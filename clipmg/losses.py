"""Contrastive losses between image features I (B, D) and text features T (N, D).

The text side holds either the distinct captions of the batch (`--contrast batch`, N <= B: the
trainer encodes each distinct caption once) or one prompt per class (`--contrast classes`,
N = C). `image_labels` (B,) and `text_labels` (N,) are class indices; an image's positives are
all text columns with its label, so frames sharing a caption are never negatives of each other.

All losses take L2-normalised features and the logit scale s (= 1 / temperature):

- `ce`: soft-target cross-entropy of s·I·Tᵀ (image->text) and its transpose (text->image) against
  the label-aware targets, averaged over both directions.
- `soft_ce`: the original project's soft targets softmax(s·(I·Iᵀ + T_i·T_iᵀ)/2), with T_i the
  text row of sample i's label, on the B x B per-sample logits s·T_i·Iᵀ.
- `js`: Jensen-Shannon divergence (natural log, bounded by ln 2) between each row's softmax and
  its label-aware target, both directions.

Text->image rows with no image of their class in the batch (possible with `classes` contrast)
have no target and are skipped. Every image must have its label among `text_labels`.

`logit_bias` (C,), indexed by class index, is added to the image->text logits of each class's
columns; `tau * log(class_prior)` gives logit-adjusted training (Menon et al. 2021) against class
imbalance, meant for `classes` contrast (`class_prior_bias` makes it from the class prior).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipmg.errors import TrainingError


def label_aware_targets(
    row_labels: torch.Tensor, col_labels: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(R, C) matrix: 1 where the labels are equal, each row normalised to sum 1 (all-zero rows,
    with no equal label, stay zero)."""
    matches = (row_labels[:, None] == col_labels[None, :]).to(dtype)
    return matches / matches.sum(dim=1, keepdim=True).clamp(min=1.0)


def class_prior_bias(class_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """tau·log(prior) per class: the `logit_bias` of logit-adjusted training (Menon et al. 2021),
    so rare classes must win by a larger margin. `class_prior` (N,) need not sum to 1."""
    prior = class_prior.float().clamp(min=torch.finfo(torch.float32).tiny)
    return tau * prior.log()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy with a target distribution per row."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def js_divergence(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen-Shannon divergence (natural log) between softmax(logits) and targets."""
    log_p = F.log_softmax(logits, dim=-1)
    p = log_p.exp()
    # Clamp so rows where both p and the target are ~0 give 0·finite, not 0·(-inf) or 0/0 grads.
    log_m = ((p + targets) / 2).clamp(min=torch.finfo(p.dtype).tiny).log()
    kl_pm = (p * (log_p - log_m)).sum(dim=-1)
    kl_qm = (torch.xlogy(targets, targets) - targets * log_m).sum(dim=-1)
    return (kl_pm + kl_qm) / 2


def _check_every_image_has_text(targets: torch.Tensor) -> None:
    if not bool((targets.sum(dim=1) > 0).all()):
        raise TrainingError("every image label must appear among text_labels (no positive caption)")


def _with_class_bias(logits, logit_bias, column_labels):
    """Add logit_bias (C,), indexed by class, to each column of its class (all rows)."""
    if logit_bias is None:
        return logits
    return logits + logit_bias.to(logits)[column_labels.to(logits.device)]


def _both_directions(row_loss, logits, image_labels, text_labels, logit_bias=None):
    """Mean of row_loss over image->text rows and over text->image rows that have a positive."""
    i2t_targets = label_aware_targets(image_labels, text_labels, logits.dtype)
    _check_every_image_has_text(i2t_targets)
    t2i_targets = label_aware_targets(text_labels, image_labels, logits.dtype)
    present = t2i_targets.sum(dim=1) > 0
    i2t_logits = _with_class_bias(logits, logit_bias, text_labels)
    image_loss = row_loss(i2t_logits, i2t_targets).mean()
    text_loss = row_loss(logits.T[present], t2i_targets[present]).mean()
    return (image_loss + text_loss) / 2


def contrastive_ce(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor | float,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Label-aware contrastive cross-entropy (see the module docstring)."""
    logits = scale * image_features @ text_features.T
    return _both_directions(soft_cross_entropy, logits, image_labels, text_labels, logit_bias)


def contrastive_js(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor | float,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Label-aware Jensen-Shannon loss (see the module docstring)."""
    logits = scale * image_features @ text_features.T
    return _both_directions(js_divergence, logits, image_labels, text_labels, logit_bias)


def text_column_of(image_labels: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """For each image, the index of the (first) text column with its label."""
    matches = image_labels[:, None] == text_labels[None, :]
    _check_every_image_has_text(matches.float())
    return matches.int().argmax(dim=1)


def soft_target_ce(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor | float,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The original project's loss. Its targets were softmax(sim/2 · temperature) with temperature
    1 in the recipe it followed; here they use the same scale s as the logits. As in the original,
    gradients also flow through the targets, and the image->text direction uses the transposed
    targets (columns of a row-softmax, which need not sum to 1)."""
    sample_text = text_features[text_column_of(image_labels, text_labels)]
    logits = scale * sample_text @ image_features.T
    similarity = (image_features @ image_features.T + sample_text @ sample_text.T) / 2
    targets = F.softmax(similarity * scale, dim=-1)
    text_loss = soft_cross_entropy(logits, targets)
    # image->text: rows are images, columns the per-sample texts, of class image_labels[i]
    image_loss = soft_cross_entropy(_with_class_bias(logits.T, logit_bias, image_labels), targets.T)
    return ((image_loss + text_loss) / 2).mean()


LOSSES = {"ce": contrastive_ce, "soft_ce": soft_target_ce, "js": contrastive_js}
LOSS_NAMES = tuple(LOSSES)


def contrastive_loss(
    name: str,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor | float,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """The loss called `name` ("ce", "soft_ce", "js"); kwargs go to it (`logit_bias`)."""
    if name not in LOSSES:
        raise TrainingError(f"unknown loss {name!r}; use one of {', '.join(LOSS_NAMES)}")
    return LOSSES[name](image_features, text_features, scale, image_labels, text_labels, **kwargs)


# --- classification losses (models with their own classifier head) -------------------------------

CLASS_WEIGHTINGS = ("none", "inverse", "sqrt")


def class_weights_from_counts(counts: torch.Tensor, mode: str = "inverse") -> torch.Tensor | None:
    """Per-class loss weights from training counts (C,): `inverse` ∝ 1/n, `sqrt` ∝ 1/√n, scaled
    so that their mean over the classes present is 1; `none` gives None. Absent classes (n = 0)
    get weight 0: no training frame can carry it."""
    if mode == "none":
        return None
    if mode not in CLASS_WEIGHTINGS:
        raise TrainingError(f"unknown class weighting {mode!r}; use one of {', '.join(CLASS_WEIGHTINGS)}")
    counts = torch.as_tensor(counts, dtype=torch.float32)
    present = counts > 0
    if not bool(present.any()):
        raise TrainingError("class weights need at least one class with training frames")
    power = 1.0 if mode == "inverse" else 0.5
    weights = torch.where(present, counts.clamp(min=1).pow(-power), torch.zeros_like(counts))
    return weights / weights[present].mean()


def classification_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    focal_gamma: float = 0.0,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of (B, C) logits, optionally class-weighted and focal.

    Focal loss (Lin et al. 2017, softmax form): -w_y (1 - p_y)^gamma log p_y; gamma = 0 is the
    (weighted) cross-entropy. As in `F.cross_entropy`, a weighted mean divides by the sum of the
    weights of the batch's targets. `logit_bias` (C,) is added to the logits first (logit
    adjustment: `tau * log(class_prior)`)."""
    if focal_gamma < 0:
        raise TrainingError(f"focal gamma must be 0 or more, got {focal_gamma}")
    if logit_bias is not None:
        logits = logits + logit_bias.to(logits)
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    loss = -log_p
    if focal_gamma > 0:
        loss = (1.0 - log_p.exp()).clamp(min=0).pow(focal_gamma) * loss
    if class_weights is None:
        return loss.mean()
    weights = class_weights.to(loss)[targets]
    return (weights * loss).sum() / weights.sum().clamp(min=torch.finfo(loss.dtype).tiny)
