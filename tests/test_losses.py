import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon

from clipmg.errors import TrainingError
from clipmg.losses import (
    LOSS_NAMES,
    class_prior_bias,
    contrastive_ce,
    contrastive_js,
    contrastive_loss,
    label_aware_targets,
    soft_target_ce,
)


def features(rows: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)


# Batch contrast: 6 images, 3 distinct captions (labels 4, 7, 9), several images per caption.
IMAGE_LABELS = torch.tensor([7, 4, 7, 9, 7, 4])
TEXT_LABELS = torch.tensor([4, 7, 9])
# Classes contrast: 5 class prompts, classes 1 and 3 absent from the batch.
CLASS_IMAGE_LABELS = torch.tensor([0, 2, 2, 4])
CLASS_TEXT_LABELS = torch.arange(5)

CASES = [(IMAGE_LABELS, TEXT_LABELS), (CLASS_IMAGE_LABELS, CLASS_TEXT_LABELS)]


def np_log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def direct_rows(logits: np.ndarray, row_labels, col_labels, row_loss) -> list[float]:
    """Loop over rows; skip rows without a positive column."""
    losses = []
    for r, row_label in enumerate(row_labels):
        positives = [c for c, col_label in enumerate(col_labels) if col_label == row_label]
        if not positives:
            continue
        target = np.zeros(len(col_labels))
        target[positives] = 1.0 / len(positives)
        losses.append(row_loss(logits[r], target))
    return losses


def direct_both_directions(image, text, scale, image_labels, text_labels, row_loss) -> float:
    logits = scale * image.numpy() @ text.numpy().T
    labels_i, labels_t = image_labels.tolist(), text_labels.tolist()
    image_rows = direct_rows(logits, labels_i, labels_t, row_loss)
    text_rows = direct_rows(logits.T, labels_t, labels_i, row_loss)
    return (np.mean(image_rows) + np.mean(text_rows)) / 2


def direct_ce_row(row, target) -> float:
    return float(-(target * np_log_softmax(row)).sum())


def direct_js_row(row, target) -> float:
    return float(jensenshannon(np.exp(np_log_softmax(row)), target) ** 2)


def test_label_aware_targets_rows_sum_to_one_over_equal_labels():
    targets = label_aware_targets(torch.tensor([1, 2, 1, 3]), torch.tensor([1, 1, 2]))
    expected = torch.tensor([[0.5, 0.5, 0], [0, 0, 1], [0.5, 0.5, 0], [0, 0, 0]])
    assert torch.equal(targets, expected)


@pytest.mark.parametrize("image_labels, text_labels", CASES)
def test_ce_matches_direct_formula(image_labels, text_labels):
    image, text = features(len(image_labels)), features(len(text_labels), seed=1)
    loss = contrastive_ce(image, text, 10.0, image_labels, text_labels)
    expected = direct_both_directions(image, text, 10.0, image_labels, text_labels, direct_ce_row)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("image_labels, text_labels", CASES)
def test_js_matches_scipy_jensenshannon_squared(image_labels, text_labels):
    image, text = features(len(image_labels)), features(len(text_labels), seed=1)
    loss = contrastive_js(image, text, 10.0, image_labels, text_labels)
    expected = direct_both_directions(image, text, 10.0, image_labels, text_labels, direct_js_row)
    assert loss.item() == pytest.approx(expected, rel=1e-7)


def test_js_is_between_zero_and_ln2_even_at_large_scale():
    image, text = features(6), features(3, seed=1)
    for scale in (0.1, 1.0, 100.0, 1e4):
        loss = contrastive_js(image, text, scale, IMAGE_LABELS, TEXT_LABELS).item()
        assert 0.0 <= loss <= math.log(2) + 1e-12


def test_soft_target_ce_matches_direct_formula():
    image, text = features(6), features(3, seed=1)
    scale = 5.0
    column = {label: c for c, label in enumerate(TEXT_LABELS.tolist())}
    sample_text = text.numpy()[[column[label] for label in IMAGE_LABELS.tolist()]]
    img = image.numpy()
    logits = scale * sample_text @ img.T
    similarity = (img @ img.T + sample_text @ sample_text.T) / 2 * scale
    targets = np.exp(np.array([np_log_softmax(row) for row in similarity]))
    text_rows = [direct_ce_row(logits[r], targets[r]) for r in range(6)]
    image_rows = [direct_ce_row(logits.T[r], targets.T[r]) for r in range(6)]
    expected = np.mean([(a + b) / 2 for a, b in zip(image_rows, text_rows)])
    loss = soft_target_ce(image, text, scale, IMAGE_LABELS, TEXT_LABELS)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_reach_features_and_scale(name):
    image = features(6).requires_grad_(True)
    text = features(3, seed=1).requires_grad_(True)
    logit_scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    loss = contrastive_loss(name, image, text, logit_scale.exp(), IMAGE_LABELS, TEXT_LABELS)
    loss.backward()
    for grad in (image.grad, text.grad, logit_scale.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_no_nan_gradients_with_saturated_logits(name):
    image = features(6, dim=4).float().requires_grad_(True)
    text = features(3, dim=4, seed=1).float().requires_grad_(True)
    loss = contrastive_loss(name, image, text, 1e4, IMAGE_LABELS, TEXT_LABELS)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(image.grad).all()


# soft_ce is not exactly symmetric: like the original, its image->text targets are the columns
# of a row-softmax (they need not sum to 1).
@pytest.mark.parametrize("name", ["ce", "js"])
def test_symmetric_when_swapping_images_and_texts(name):
    labels = torch.tensor([0, 1, 2, 3])
    image, text = features(4), features(4, seed=1)
    forward = contrastive_loss(name, image, text, 7.0, labels, labels)
    swapped = contrastive_loss(name, text, image, 7.0, labels, labels)
    assert forward.item() == pytest.approx(swapped.item(), rel=1e-9)


def test_ce_is_near_zero_for_perfectly_aligned_features():
    text = features(3, seed=1)
    image = text[[1, 0, 1, 2, 1, 0]]  # image i equals its caption's text feature
    loss = contrastive_ce(image, text, 1000.0, IMAGE_LABELS, TEXT_LABELS)
    assert loss.item() < 1e-6 + math.log(3) / 2  # t->i rows stay uniform over equal images
    assert contrastive_js(image, text, 1000.0, IMAGE_LABELS, TEXT_LABELS).item() < 1e-6


def test_logit_adjustment_adds_tau_log_prior():
    logits = torch.zeros(2, 3)
    prior = torch.tensor([0.5, 0.25, 0.25])
    adjusted = logits + class_prior_bias(prior, tau=2.0)
    assert torch.allclose(adjusted, 2.0 * prior.log().expand(2, 3))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_constant_logit_bias_changes_nothing_and_a_skewed_one_does(name):
    image, text = features(4), features(5, seed=1)
    args = (image, text, 10.0, CLASS_IMAGE_LABELS, CLASS_TEXT_LABELS)
    plain = contrastive_loss(name, *args)
    constant = contrastive_loss(name, *args, logit_bias=torch.full((5,), 3.0, dtype=torch.float64))
    prior = torch.tensor([0.9, 0.025, 0.025, 0.025, 0.025], dtype=torch.float64)
    skewed = contrastive_loss(name, *args, logit_bias=prior.log())
    assert constant.item() == pytest.approx(plain.item())
    assert skewed.item() != pytest.approx(plain.item())


def test_ce_logit_bias_matches_direct_formula():
    image, text = features(4), features(5, seed=1)
    bias = torch.tensor([0.3, -1.0, 0.0, 2.0, -0.5], dtype=torch.float64)
    loss = contrastive_ce(image, text, 10.0, CLASS_IMAGE_LABELS, CLASS_TEXT_LABELS, logit_bias=bias)
    logits = 10.0 * image.numpy() @ text.numpy().T
    labels_i, labels_t = CLASS_IMAGE_LABELS.tolist(), CLASS_TEXT_LABELS.tolist()
    image_rows = direct_rows(logits + bias.numpy()[None, :], labels_i, labels_t, direct_ce_row)
    text_rows = direct_rows(logits.T, labels_t, labels_i, direct_ce_row)
    assert loss.item() == pytest.approx((np.mean(image_rows) + np.mean(text_rows)) / 2, rel=1e-9)


def test_image_without_its_caption_is_an_error():
    with pytest.raises(TrainingError, match="text_labels"):
        contrastive_ce(features(2), features(2), 1.0, torch.tensor([0, 5]), torch.tensor([0, 1]))


def test_unknown_loss_name():
    with pytest.raises(TrainingError, match="soft_ce"):
        contrastive_loss("focal", features(2), features(2), 1.0, torch.arange(2), torch.arange(2))
