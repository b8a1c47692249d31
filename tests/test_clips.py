"""Clip models, data side and model side: K frames per clip in frame order (segment centres in
evaluation, random points of the segments in training, repeated frames for short clips), one
augmentation draw per clip (or per frame under the mean head), and the temporal heads (mean pooling is the mean of the frame
embeddings, the transformer sees the order, every head starts as mean pooling), through a
checkpoint and back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clipmg.checkpoint import load_checkpoint, save_checkpoint
from clipmg.data import ClipDataset, clip_positions, clip_table, create_transform
from clipmg.errors import DataError, ModelError
from clipmg.models import ClipModel, compose_model, create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_clip_positions_take_segment_centres_or_random_points_of_each_segment():
    assert clip_positions(16, 4).tolist() == [2, 6, 10, 14]
    assert clip_positions(4, 4).tolist() == [0, 1, 2, 3]
    rng = np.random.default_rng(0)
    draws = np.stack([clip_positions(16, 4, rng) for _ in range(200)])
    for segment in range(4):
        assert set(draws[:, segment]) == set(range(4 * segment, 4 * segment + 4))  # any frame of its segment


def test_a_clip_shorter_than_k_repeats_its_frames_in_order():
    assert clip_positions(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert clip_positions(1, 4).tolist() == [0, 0, 0, 0]
    drawn = clip_positions(3, 8, np.random.default_rng(1))
    assert sorted(drawn.tolist()) == drawn.tolist() and set(drawn.tolist()) <= {0, 1, 2}
    with pytest.raises(DataError):
        clip_positions(0, 4)


def test_clip_table_orders_frames_by_frame_id():
    frames = pd.DataFrame({"path": list("abcde"), "class_id": [2, 1, 1, 2, 1], "video_id": ["x", "y", "y", "x", "y"],
                           "frame_id": [7, 5, 1, 3, 3], "caption": [""] * 5, "row": [2, 3, 4, 5, 6]})
    table = clip_table(frames)
    assert table["video_id"].tolist() == ["x", "y"]
    assert [p.tolist() for p in table["positions"]] == [[3, 0], [2, 4, 1]]
    assert table["path"].tolist() == ["d", "c"] and table["n_frames"].tolist() == [2, 3]


def _one_image_clip(tmp_path, frames: int) -> pd.DataFrame:
    """A clip whose frames are all the same picture: any difference between them is augmentation."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "frame.png")
    return pd.DataFrame({"path": ["frame.png"] * frames, "class_id": [1] * frames, "video_id": ["v"] * frames,
                         "frame_id": list(range(frames)), "caption": [""] * frames, "row": range(2, frames + 2)})


def test_one_augmentation_draw_per_clip(tmp_path):
    frames = _one_image_clip(tmp_path, 4)
    dataset = ClipDataset(frames, tmp_path, create_transform(32, train=True), clip_frames=6, train=True, hflip=True)
    dataset.set_random_seed(3)
    first = dataset[0]
    assert first["image"].shape == (6, 3, 32, 32)
    for image in first["image"][1:]:
        torch.testing.assert_close(image, first["image"][0])  # same crop, jitter and flip for every frame
    dataset.set_random_seed(3)
    torch.testing.assert_close(dataset[0]["image"], first["image"])  # the seed fixes the draw
    dataset.set_random_seed(4)
    assert not torch.equal(dataset[0]["image"][0], first["image"][0])  # another clip draw, another augmentation


def test_frames_augmented_apart_get_draws_of_their_own_that_the_seed_fixes(tmp_path):
    frames = _one_image_clip(tmp_path, 4)
    dataset = ClipDataset(frames, tmp_path, create_transform(32, train=True), clip_frames=4, train=True, hflip=True,
                          augment_apart=True)
    dataset.set_random_seed(3)
    first = dataset[0]["image"]
    assert len({image.numpy().tobytes() for image in first}) == 4  # four frames, four augmentations
    dataset.set_random_seed(3)
    torch.testing.assert_close(dataset[0]["image"], first)


def test_evaluation_clips_are_fixed_and_training_ones_vary(tmp_path):
    frames = _one_image_clip(tmp_path, 10)
    evaluation = ClipDataset(frames, tmp_path, create_transform(32), clip_frames=4)
    assert evaluation[0]["frames"].tolist() == [1, 3, 6, 8] == evaluation[0]["frames"].tolist()
    training = ClipDataset(frames, tmp_path, create_transform(32), clip_frames=4, train=True)
    drawn = set()
    for seed in range(20):
        training.set_random_seed(seed)
        drawn.add(tuple(training[0]["frames"].tolist()))
    assert len(drawn) > 1


def test_unreadable_frames_are_replaced_by_the_clips_others(tmp_path):
    frames = _one_image_clip(tmp_path, 4)
    frames.loc[1, "path"] = "missing.png"
    dataset = ClipDataset(frames, tmp_path, create_transform(32), clip_frames=4, skip_bad_images=True)
    assert dataset[0]["frames"].tolist() == [0, 2, 2, 3]  # the centres of 4 segments over frames 0, 2, 3


# ------------------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    return create_model("openclip:clipmg-tiny").eval()


def _clips(batch=2, frames=4, size=64) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(1))


def _clip_model(tower, temporal, clip_frames=4) -> ClipModel:
    model = compose_model(tower, clip_frames=clip_frames, temporal=temporal).eval()
    assert isinstance(model, ClipModel) and model.inner is tower
    return model


@torch.no_grad()
def test_mean_pooling_is_the_mean_of_the_frame_embeddings(tower):
    clips = _clips()
    model = _clip_model(tower, "mean")
    frames = tower.encode_image(clips.flatten(0, 1)).unflatten(0, (2, 4))
    torch.testing.assert_close(model.encode_image(clips, normalize=False), frames.mean(dim=1))
    mean_logit_order = (tower.scale() * frames @ torch.eye(frames.shape[-1])[:5].T).mean(dim=1).argsort(dim=1)
    assert torch.equal(model.class_logits(clips, torch.eye(frames.shape[-1])[:5]).argsort(dim=1), mean_logit_order)


@torch.no_grad()
@pytest.mark.parametrize("temporal", ["attention", "transformer"])
def test_every_head_starts_as_mean_pooling(tower, temporal):
    clips = _clips()
    torch.testing.assert_close(_clip_model(tower, temporal).encode_image(clips),
                               _clip_model(tower, "mean").encode_image(clips))


def _trained(model: ClipModel) -> ClipModel:
    """The head's parameters moved off their start (which is mean pooling, order-free)."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in model.head.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model


@torch.no_grad()
def test_the_order_of_the_frames_matters_to_the_transformer_only(tower):
    clips = _clips()
    reversed_clips = clips.flip(dims=[1])
    for temporal in ("mean", "attention"):
        model = _trained(_clip_model(tower, temporal))
        torch.testing.assert_close(model.encode_image(reversed_clips), model.encode_image(clips))
    transformer = _trained(_clip_model(tower, "transformer"))
    assert not torch.allclose(transformer.encode_image(reversed_clips), transformer.encode_image(clips), atol=1e-4)


@torch.no_grad()
def test_a_clip_shorter_than_k_and_single_frames_work(tower):
    model = _trained(_clip_model(tower, "transformer", clip_frames=4))
    assert model.scoring_features(_clips(frames=2)).shape == (2, 64)
    frames = _clips(frames=1)[:, 0]
    torch.testing.assert_close(model.scoring_features(frames), model.scoring_features(frames[:, None]))
    with pytest.raises(ModelError, match="positions for 4 frames"):
        model.scoring_features(_clips(frames=5))


@torch.no_grad()
def test_a_linear_head_scores_the_pooled_embedding(tower):
    model = compose_model(tower, head="linear", num_classes=3, clip_frames=4, temporal="mean").eval()
    assert model.has_classifier_head and model.inner.has_classifier_head
    clips = _clips()
    frame_logits = model.inner.class_logits(clips.flatten(0, 1)).unflatten(0, (2, 4))
    torch.testing.assert_close(model.class_logits(clips), frame_logits.mean(dim=1))
    torch.testing.assert_close(model(clips), model.class_logits(clips))


def test_clip_models_refuse_hand_crops_and_keep_their_head_when_rewrapped(tower):
    with pytest.raises(ModelError, match="hand crops"):
        compose_model(tower, hand_crops=True, clip_frames=4)
    model = _clip_model(tower, "attention")
    head = model.head
    rewrapped = compose_model(model, head="linear", num_classes=3)
    assert rewrapped is model and rewrapped.head is head and rewrapped.has_classifier_head
    with pytest.raises(ModelError, match="cannot become 'transformer'"):
        compose_model(_clip_model(tower, "mean"), clip_frames=4, temporal="transformer")


@torch.no_grad()
@pytest.mark.parametrize("head", [None, "linear"])
def test_checkpoint_round_trip_records_k_and_the_head(tower, tmp_path, head):
    model = _trained(compose_model(tower, head=head, num_classes=3, clip_frames=3, temporal="transformer")).eval()
    save_checkpoint(tmp_path / "ckpt", model, {"class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]})
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert config["model"]["clip_frames"] == 3 and config["model"]["temporal"] == "transformer"
    assert isinstance(loaded, ClipModel) and loaded.clip_frames == 3
    clips = _clips(frames=3)
    torch.testing.assert_close(loaded.scoring_features(clips), model.scoring_features(clips))


@torch.no_grad()
def test_a_pose_fusion_clip_model_takes_each_frames_keypoints(tower):
    from clipmg.pose.keypoints import KEYPOINT_DIM

    model = compose_model(tower, pose_fusion="concat", clip_frames=2, temporal="mean").eval()
    assert model.extra_inputs == ("keypoints",)
    keypoints = torch.rand(2, 2, KEYPOINT_DIM)
    frames = model.inner.encode_image(_clips(frames=2).flatten(0, 1), keypoints=keypoints.flatten(0, 1))
    torch.testing.assert_close(model.encode_image(_clips(frames=2), normalize=False, keypoints=keypoints),
                               frames.unflatten(0, (2, 2)).mean(dim=1))


@pytest.mark.parametrize("temporal,apart", [("mean", True), ("attention", False), ("transformer", False)])
def test_only_the_mean_head_augments_a_clips_frames_apart(tower, temporal, apart):
    assert compose_model(tower, clip_frames=3, temporal=temporal).augments_frames_apart is apart
