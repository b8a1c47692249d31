"""Hand crops (`clipmg.models.handcrops`): crop geometry against direct crops, the max-over-crops
rule, the full frame when no hand is found, checkpoints and training. No MediaPipe needed:
boxes are synthetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipmg import data as cdata
from clipmg.checkpoint import load_checkpoint, save_checkpoint
from clipmg.errors import ModelError
from clipmg.models import HandCropModel, create_model
from clipmg.models.handcrops import crop_boxes, max_probability_log_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def boxes_tensor(*frames) -> torch.Tensor:
    """Each frame: a list of up to two (x0, y0, x1, y1) fraction boxes."""
    out = torch.zeros(len(frames), 2, 5)
    for i, boxes in enumerate(frames):
        for j, box in enumerate(boxes):
            out[i, j, :4] = torch.tensor(box)
            out[i, j, 4] = 1.0
    return out


def test_crops_are_the_pixels_inside_the_box():
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    boxes = boxes_tensor([(4 / 32, 6 / 32, 12 / 32, 14 / 32)], [(0.5, 0.0, 0.75, 0.25)])
    crops = crop_boxes(image, boxes, size=8)
    assert crops.shape == (2, 2, 3, 8, 8)
    torch.testing.assert_close(crops[0, 0], image[0, :, 6:14, 4:12])
    torch.testing.assert_close(crops[1, 0], image[1, :, 0:8, 16:24])
    # a box twice the output size: each output pixel averages a 2 x 2 block
    big = crop_boxes(image, boxes_tensor([(0.25, 0.5, 0.75, 1.0)], []), size=8)
    torch.testing.assert_close(big[0, 0], F.avg_pool2d(image[0:1, :, 16:32, 8:24], 2)[0])


def test_max_over_candidates_rule():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 5, generator=generator) * 3
    valid = torch.tensor([[True, True, True], [False, False, True], [True, False, False], [True, True, False]])
    scores = max_probability_log_scores(logits, valid)
    probs = logits.softmax(dim=-1).numpy()
    for i in range(4):
        expected = probs[i][valid[i].numpy()].max(axis=0)
        np.testing.assert_allclose(scores[i].exp().numpy(), expected, rtol=1e-5)
        # the predicted class is the one with the highest probability in any valid candidate
        candidate_probs = probs[i][valid[i].numpy()]  # (valid candidates, classes)
        best_class = np.unravel_index(np.argmax(candidate_probs), candidate_probs.shape)[1]
        assert scores[i].argmax().item() == best_class
    torch.testing.assert_close(scores.softmax(dim=-1).sum(dim=-1), torch.ones(4))


def tiny_hand_model(full_frame: bool = True, seed: int = 0) -> HandCropModel:
    torch.manual_seed(seed)
    return HandCropModel(create_model("openclip:clipmg-tiny"), include_full_frame=full_frame).eval()


def class_embeddings(model, count: int = 4) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text([f"class {i}" for i in range(count)])


def test_class_logits_score_crops_and_full_frame_as_the_inner_model_does():
    model = tiny_hand_model(full_frame=False)
    assert model.preprocess_config["image_size"] == 128 and model.crop_size == 64
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    boxes = boxes_tensor([(0.0, 0.0, 0.5, 0.5), (0.25, 0.5, 0.75, 1.0)], [])  # frame 1: no hand found
    embeddings = class_embeddings(model)
    with torch.no_grad():
        scores = model.class_logits(x, embeddings, hand_boxes=boxes)
        inner = model.inner
        crop_a = x[0:1, :, 0:64, 0:64]  # a 64 px box at 64 px: the pixels themselves
        crop_b = x[0:1, :, 64:128, 32:96]
        full_1 = F.interpolate(x[1:2], size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        probs = [(inner.scale() * inner.encode_image(c) @ embeddings.T).softmax(-1) for c in (crop_a, crop_b, full_1)]
    torch.testing.assert_close(scores[0].exp(), torch.maximum(probs[0], probs[1])[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores[1].exp(), probs[2][0], rtol=1e-4, atol=1e-5)


def test_full_frame_joins_the_crops_when_asked():
    with_frame, without = tiny_hand_model(True), tiny_hand_model(False)
    x = torch.randn(1, 3, 128, 128)
    boxes = boxes_tensor([(0.1, 0.1, 0.4, 0.4)])
    _, valid = with_frame.candidates(x, boxes)
    assert valid.tolist() == [[True, False, True]]
    _, valid = without.candidates(x, boxes)
    assert valid.tolist() == [[True, False, False]]


def test_training_mode_encodes_one_valid_candidate_per_frame(monkeypatch):
    model = tiny_hand_model(False).train()
    x = torch.randn(3, 3, 128, 128)
    boxes = boxes_tensor([(0.0, 0.0, 0.5, 0.5)], [], [(0.5, 0.5, 1.0, 1.0), (0.0, 0.5, 0.5, 1.0)])
    inputs, valid = model.candidates(x, boxes)
    seen = []
    encode = model.inner.encode_image
    monkeypatch.setattr(model.inner, "encode_image", lambda images, normalize=True: seen.append(images) or
                        encode(images, normalize=normalize))
    torch.manual_seed(0)
    for _ in range(6):
        with torch.no_grad():
            assert model.encode_image(x, hand_boxes=boxes).shape == (3, 64)
    drawn = set()
    for batch in seen:
        assert batch.shape == (3, 3, 64, 64)  # one candidate per frame, not all of them
        for frame in range(3):
            matches = [k for k in range(3) if torch.equal(batch[frame], inputs[frame, k])]
            assert matches and all(valid[frame, k] for k in matches)
            drawn.add((frame, matches[0]))
    assert {(2, 0), (2, 1)} <= drawn  # both hands of frame 2 get their turn


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = tiny_hand_model(True, seed=4)
    save_checkpoint(tmp_path / "ckpt", model, {"class_ids": [1, 2, 3, 4], "class_names": list("abcd")})
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded, HandCropModel) and config["model"]["frame_size"] == 128
    x, boxes = torch.randn(2, 3, 128, 128), boxes_tensor([(0.2, 0.2, 0.6, 0.6)], [])
    embeddings = class_embeddings(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded.class_logits(x, embeddings, hand_boxes=boxes),
                                   model.class_logits(x, embeddings, hand_boxes=boxes))
    with pytest.raises(ModelError, match="hand boxes"):
        model.class_logits(x, embeddings)
    with pytest.raises(ModelError, match=r"\(batch, 2, 5\)"):
        model.class_logits(x, embeddings, hand_boxes=torch.zeros(2, 4))


def test_trainer_trains_hand_crops_on_uncropped_frames(tiny_train_settings, monkeypatch):
    from clipmg.training import TrainConfig
    from clipmg.training.trainer import Trainer

    def fake_boxes(paths, roots, options):
        boxes = np.zeros((len(paths), 2, 5), dtype=np.float32)
        boxes[::2, 0] = (0.3, 0.4, 0.7, 0.8, 1.0)  # every other frame has one hand
        return boxes

    monkeypatch.setitem(cdata.EXTRA_FIELD_LOADERS, "hand_boxes", fake_boxes)
    settings = {**tiny_train_settings, "hand_crops": True, "epochs": 1, "max_steps_per_epoch": 2}
    trainer = Trainer(TrainConfig(**settings).validate())
    summary = trainer.fit()
    assert isinstance(trainer.model, HandCropModel) and summary["epochs_run"] == 1
    # training frames are given uncropped (the boxes' geometry), as evaluation gives them
    train_pipeline = repr(trainer.train_dataset.dataset.transform.pipeline)
    assert "RandomResizedCrop" not in train_pipeline and "CenterCrop" in train_pipeline
    assert 0.0 <= summary["best"]["top1"] <= 1.0


def test_prompt_experiments_score_a_hand_crop_checkpoint_as_test_py_does(tiny_dataset, tmp_path, monkeypatch):
    """`clipmg prompts evaluate` rescoring cached features gives test.py's figures for a model whose
    scores are not a plain dot product (max probability over hand crops)."""
    from clipmg.checkpoint import save_checkpoint
    from clipmg.inference import evaluate_checkpoint
    from clipmg.jobs.prompt_eval import evaluate_prompt_sets

    def fake_boxes(paths, roots, options):
        boxes = np.zeros((len(paths), 2, 5), dtype=np.float32)
        boxes[::2, 0] = (0.2, 0.3, 0.6, 0.7, 1.0)
        boxes[::3, 1] = (0.5, 0.1, 0.9, 0.5, 1.0)
        return boxes

    monkeypatch.setitem(cdata.EXTRA_FIELD_LOADERS, "hand_boxes", fake_boxes)
    labels = cdata.load_labels(tiny_dataset / "Clip_label.csv")
    torch.manual_seed(0)
    model = HandCropModel(create_model("openclip:clipmg-tiny"), include_full_frame=False)
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, model, {"class_ids": list(labels), "class_names": list(labels.values()),
                                    "preprocess": model.preprocess_config})
    metadata = tiny_dataset / "training" / "train.xlsx"
    table = evaluate_prompt_sets(["classnames", "photo"], metadata, checkpoint=folder, out_dir=tmp_path / "p",
                                 workers=0, tensorboard=False)["table"].set_index("prompts")
    for prompts in ("classnames", "photo"):
        reference = evaluate_checkpoint(folder, metadata, out_dir=tmp_path / prompts, workers=0,
                                        prompts=None if prompts == "classnames" else prompts)
        for key in ("top1", "top5", "balanced_accuracy", "clip_top1"):
            assert table.loc[prompts, key] == pytest.approx(reference[key]), (prompts, key)
