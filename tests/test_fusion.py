"""Pose fusion (`clipmg.models.fusion`): fused image embeddings, the missing-pose path,
checkpoints, parts, training through the Trainer and prediction on a fused checkpoint. No
MediaPipe needed: keypoints come from a synthetic loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clipmg import data as cdata
from clipmg.checkpoint import load_checkpoint, save_checkpoint
from clipmg.errors import DataError, ModelError
from clipmg.models import PoseFusionModel, compose_model, create_model
from clipmg.pose.keypoints import HAND_FOUND, KEYPOINT_DIM, POSE, POSE_FOUND

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_keypoints(count: int, found: bool = True, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.rand(count, KEYPOINT_DIM, generator=generator)
    vectors[:, [POSE_FOUND, *HAND_FOUND]] = 1.0 if found else 0.0
    return vectors


def tiny_fused(fusion: str = "concat", seed: int = 0) -> PoseFusionModel:
    torch.manual_seed(seed)
    return PoseFusionModel(create_model("openclip:clipmg-tiny"), fusion=fusion).eval()


def images(count: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def disturb(model: PoseFusionModel) -> None:
    """Move the fusion away from its identity start so keypoints matter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("inner."):
                param.add_(torch.randn_like(param) * 0.3)


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_fusion_starts_as_the_inner_model_and_then_uses_keypoints(fusion):
    model = tiny_fused(fusion)
    x, keypoints = images(), synthetic_keypoints(3)
    with torch.no_grad():
        fused = model.encode_image(x, keypoints=keypoints)
        inner = model.inner.encode_image(x)
    assert fused.shape == inner.shape == (3, 64)
    torch.testing.assert_close(fused.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(fused, inner, rtol=1e-5, atol=1e-5)
    disturb(model)
    with torch.no_grad():
        a = model.encode_image(x, keypoints=keypoints)
        b = model.encode_image(x, keypoints=synthetic_keypoints(3, seed=1))
    assert not torch.allclose(a, b, atol=1e-4)


def test_frames_without_a_person_get_the_learned_missing_embedding():
    model = tiny_fused("concat")
    disturb(model)
    encoder = model.pose_encoder
    nobody = synthetic_keypoints(4, found=False)
    with torch.no_grad():
        encoded = encoder(nobody)
        mixed = encoder(torch.cat([nobody[:1], synthetic_keypoints(1)]))
    # whatever the (meaningless) coordinates of a frame with nothing found: the missing embedding
    torch.testing.assert_close(encoded, encoder.missing.detach().expand(4, -1))
    assert not torch.allclose(mixed[1], encoder.missing.detach())
    # zeros (the cache's "nothing found" vector) go the same way, and still give a usable embedding
    zeros = torch.zeros(2, KEYPOINT_DIM)
    with torch.no_grad():
        out = model.encode_image(images(2), keypoints=zeros)
    assert torch.isfinite(out).all()


def test_bad_keypoints_are_clear_errors():
    model = tiny_fused()
    with pytest.raises(ModelError, match="needs each frame's keypoints"):
        model.encode_image(images(1))
    with pytest.raises(ModelError, match=rf"\(batch, {KEYPOINT_DIM}\)"):
        model.encode_image(images(1), keypoints=torch.zeros(1, 5))
    with pytest.raises(ModelError, match="concat, gated"):
        PoseFusionModel(create_model("openclip:clipmg-tiny"), fusion="sum")


def test_pose_parameters_are_heads_and_keep_training_when_towers_freeze():
    model = tiny_fused("gated")
    pose_names = [n for n, _ in model.named_parameters() if not n.startswith("inner.")]
    assert pose_names and {model.parameter_part(n) for n in pose_names} == {"heads"}
    assert model.parameter_part("inner.visual.conv1.weight") == model.inner.parameter_part("visual.conv1.weight")
    model.freeze(image=True, text=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(pose_names) <= trainable
    assert not any(model.parameter_part(n) == "image" for n in trainable)
    groups = model.param_groups(lr_image=1.0, lr_text=2.0, lr_heads=3.0)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) in in_groups for n, p in model.named_parameters() if n in pose_names)
    assert {g["lr"] for g in groups} == {3.0}


def test_fused_checkpoint_round_trip(tmp_path):
    model = tiny_fused("gated", seed=3)
    disturb(model)
    save_checkpoint(tmp_path / "ckpt", model, {"class_ids": [1, 2], "class_names": ["a", "b"]})
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded, PoseFusionModel) and config["model"]["inner"]["backend"] == "openclip"
    x, keypoints = images(), synthetic_keypoints(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(x, keypoints=keypoints),
                                   model.encode_image(x, keypoints=keypoints))
        torch.testing.assert_close(loaded.encode_text(["a frame"]), model.encode_text(["a frame"]))
    assert loaded.extra_inputs == ("keypoints",)
    assert compose_model(loaded, pose_fusion="concat") is loaded
    assert compose_model(model.inner, pose_fusion="none") is model.inner


def path_keypoints(paths, roots, options):
    """Keypoints that carry the class: the class folder of the path sets the pose block."""
    vectors = np.zeros((len(paths), KEYPOINT_DIM), dtype=np.float32)
    for i, path in enumerate(paths):
        class_id = int(str(path).split("/")[0])
        vectors[i, POSE] = np.sin(np.arange(POSE.stop) * class_id)
        vectors[i, POSE_FOUND] = float(class_id % 2 == 0)  # odd classes: "nobody found"
    return vectors


@pytest.fixture
def synthetic_keypoint_loader():
    previous = cdata.EXTRA_FIELD_LOADERS["keypoints"]
    calls = []

    def loader(paths, roots, options):
        calls.append(len(paths))
        return path_keypoints(paths, roots, options)

    cdata.EXTRA_FIELD_LOADERS["keypoints"] = loader
    yield calls
    cdata.EXTRA_FIELD_LOADERS["keypoints"] = previous


def test_trainer_trains_a_fused_model_and_test_py_uses_it(tiny_train_settings, synthetic_keypoint_loader,
                                                          tiny_dataset, tmp_path):
    from clipmg.inference import predict_csv
    from clipmg.training import TrainConfig
    from clipmg.training.trainer import Trainer

    settings = {**tiny_train_settings, "pose_fusion": "concat", "epochs": 1, "max_steps_per_epoch": 3}
    trainer = Trainer(TrainConfig(**settings).validate())
    trainer.setup()
    assert isinstance(trainer.model, PoseFusionModel)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n.startswith("fuse")}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)  # the fusion trained
    assert synthetic_keypoint_loader  # training and validation asked for keypoints

    run = tmp_path / "run"
    model, config = load_checkpoint(run / "best")
    assert isinstance(model, PoseFusionModel) and config["train"]["pose_fusion"] == "concat"
    frames = pd.concat([trainer.val_df, trainer.train_df]).head(6)
    csv = tmp_path / "frames.csv"
    pd.DataFrame({"Path": frames["path"], "Class": frames["class_id"]}).to_csv(csv, index=False)
    calls_before = len(synthetic_keypoint_loader)
    summary = predict_csv(run / "best", csv, output=tmp_path / "pred.csv", image_root=tiny_dataset / "training",
                          device="cpu", workers=0, batch_size=4)
    assert summary["n_predicted"] == 6 and len(synthetic_keypoint_loader) > calls_before
    # the predictions are those of the fused model on the same inputs, computed directly
    transform = cdata.transform_for_model(config["preprocess"], train=False)
    x = torch.stack([transform(cdata.load_image(tiny_dataset / "training" / p)) for p in frames["path"]])
    keypoints = torch.as_tensor(path_keypoints(list(frames["path"]), [], {}))
    from clipmg.prompts import PromptSet, build_class_embeddings

    with torch.no_grad():
        embeddings = build_class_embeddings(model, config["class_names"], PromptSet.from_dict(config["prompts"]),
                                            class_ids=config["class_ids"])
        expected = model.class_logits(x, embeddings, keypoints=keypoints).argmax(dim=1)
    predicted = pd.read_csv(tmp_path / "pred.csv")["pred_class"].to_numpy()
    np.testing.assert_array_equal(predicted, np.asarray(config["class_ids"])[expected.numpy()])


def test_config_rejects_two_pose_approaches_at_once(tiny_train_settings):
    from clipmg.training import TrainConfig

    with pytest.raises(DataError, match="choose one"):
        TrainConfig(**{**tiny_train_settings, "pose_fusion": "gated", "hand_crops": True}).validate()
    with pytest.raises(DataError, match="pose_fusion"):
        TrainConfig(**{**tiny_train_settings, "pose_fusion": "sum"}).validate()


def test_linear_head_sits_over_the_fused_embedding(tiny_train_settings, synthetic_keypoint_loader):
    from clipmg.models import SupervisedModel
    from clipmg.training import TrainConfig
    from clipmg.training.trainer import Trainer

    settings = {**tiny_train_settings, "pose_fusion": "gated", "head": "linear", "epochs": 1,
                "max_steps_per_epoch": 2}
    trainer = Trainer(TrainConfig(**settings).validate())
    summary = trainer.fit()
    assert isinstance(trainer.model, SupervisedModel) and trainer.model.extra_inputs == ("keypoints",)
    assert np.isfinite(summary["best"]["loss"])
    keypoints = torch.as_tensor(path_keypoints(["1/a.jpg", "2/b.jpg"], [], {}))
    x = images(2)
    trainer.model.eval()
    with torch.no_grad():
        assert not torch.allclose(trainer.model.class_logits(x, None, keypoints=keypoints),
                                  trainer.model.class_logits(x, None, keypoints=keypoints.flip(0)))


def test_hflip_training_mirrors_the_keypoints_of_the_frames_it_flips(tiny_train_settings, synthetic_keypoint_loader):
    """With --hflip, the training items of a fused model are replayed from their seeds: each is
    either the plain frame with its keypoints or the flipped frame with the mirrored keypoints."""
    from clipmg.pose.keypoints import mirror_keypoints
    from clipmg.training import TrainConfig
    from clipmg.training.sampling import step_seed
    from clipmg.training.trainer import Trainer

    settings = {**tiny_train_settings, "pose_fusion": "concat", "hflip": True, "epochs": 1}
    trainer = Trainer(TrainConfig(**settings).validate())
    trainer.setup()
    dataset = trainer.train_dataset.dataset
    assert dataset.hflip and not dataset.transform.hflip  # the dataset flips, the transform does not
    assert not any(type(step).__name__ == "HorizontalFlip" for step in dataset.transform.pipeline.transforms)
    keypoints = dataset.extra_fields["keypoints"]
    flips = []
    for index in range(len(dataset)):
        plain, mirrored = keypoints[index], mirror_keypoints(keypoints[index])
        if np.array_equal(plain, mirrored):
            continue  # nobody found: a flip leaves these keypoints as they are
        item = trainer.train_dataset[(0, index)]
        flipped = not np.array_equal(item["keypoints"].numpy(), plain)
        if flipped:
            np.testing.assert_array_equal(item["keypoints"].numpy(), mirrored)
        image = cdata.load_image(dataset.paths[index], max_size=dataset.decode_size)
        dataset.transform.set_random_seed(step_seed(trainer.cfg.run.seed, 0, index))
        expected = dataset.transform(np.ascontiguousarray(image[:, ::-1]) if flipped else image)
        assert torch.equal(item["image"], expected)
        flips.append(flipped)
    assert 0 < sum(flips) < len(flips)


def test_hand_crop_training_still_ignores_hflip(tiny_train_settings, monkeypatch):
    """Hand boxes could be mirrored now, but the hand-crop model trains on the evaluation
    geometry as before: no flips, even with --hflip."""
    from clipmg.training import TrainConfig
    from clipmg.training.trainer import Trainer

    def fake_boxes(paths, roots, options):
        boxes = np.zeros((len(paths), 2, 5), dtype=np.float32)
        boxes[:, 0] = [0.1, 0.2, 0.4, 0.5, 1.0]
        return boxes

    monkeypatch.setitem(cdata.EXTRA_FIELD_LOADERS, "hand_boxes", fake_boxes)
    settings = {**tiny_train_settings, "hand_crops": True, "hflip": True, "epochs": 1}
    trainer = Trainer(TrainConfig(**settings).validate())
    trainer.setup()
    dataset = trainer.train_dataset.dataset
    assert not dataset.hflip and not dataset.transform.hflip
    eval_transform = cdata.transform_for_model(trainer.preprocess, train=False)
    for index in range(4):
        item = trainer.train_dataset[(0, index)]
        np.testing.assert_array_equal(item["hand_boxes"].numpy(), fake_boxes(["x"], [], {})[0])
        image = cdata.load_image(dataset.paths[index], max_size=dataset.decode_size)
        assert torch.equal(item["image"], eval_transform(image))
