"""Every backend and wrapper registered with `clipmg.models.registry` is tested the day it is
registered: a tiny model of each is saved as a checkpoint, loaded back offline, and scores images
to the same logits."""

from __future__ import annotations

import pytest
import torch

from clipmg.checkpoint import load_checkpoint, save_checkpoint
from clipmg.models import compose_model, create_model
from clipmg.models.registry import BACKENDS
from clipmg.pose.keypoints import KEYPOINT_DIM

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _openclip():
    return create_model("openclip:clipmg-tiny", image_size=32)


#: backend name -> a tiny model of it (the hybrid's takes the tiny BERT folder)
TINY = {
    "openclip": lambda text: _openclip(),
    "hybrid": lambda text: create_model("hybrid", image="timm:test_resnet", text=f"hf:{text}", embed_dim=16,
                                        image_pretrained=False, image_size=32),
    "supervised": lambda text: create_model("timm:test_resnet", num_classes=3, pretrained=False, image_size=32,
                                            head="linear"),
    "pose_fusion": lambda text: compose_model(_openclip(), pose_fusion="concat"),
    "hand_crops": lambda text: compose_model(_openclip(), hand_crops=True),
    "clip": lambda text: compose_model(_openclip(), clip_frames=2, temporal="attention"),
}
EXTRAS = {
    "keypoints": lambda batch, generator: torch.rand(batch, KEYPOINT_DIM, generator=generator),
    "hand_boxes": lambda batch, generator: torch.tensor([[0.1, 0.1, 0.6, 0.6, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
                                                        ).expand(batch, 2, 5).clone(),
}


def test_every_registered_backend_has_a_tiny_model_here():
    assert set(TINY) == set(BACKENDS)


def inputs(model, batch: int = 2) -> tuple[torch.Tensor, dict]:
    generator = torch.Generator().manual_seed(0)
    size = model.preprocess_config["image_size"]
    shape = (batch, model.clip_frames, 3, size, size) if getattr(model, "clip_frames", None) else (batch, 3, size, size)
    extras = {name: EXTRAS[name](batch, generator) for name in model.extra_inputs}
    if getattr(model, "clip_frames", None):
        extras = {name: value[:, None].expand(batch, model.clip_frames, *value.shape[1:]) for name, value in extras.items()}
    return torch.randn(*shape, generator=generator), extras


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_tiny_model_of_each_backend_saves_loads_and_scores_the_same(backend, tiny_bert_folder, tmp_path):
    torch.manual_seed(0)
    model = TINY[backend](tiny_bert_folder).eval()
    assert model.backend == backend
    folder = save_checkpoint(tmp_path / "best", model, {"class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]})
    loaded, config = load_checkpoint(folder)
    assert type(loaded) is type(model) and config["model"] == model.model_config
    images, extras = inputs(model)
    with torch.no_grad():
        classes = None if model.has_classifier_head else model.encode_text(["a", "b", "c"])
        expected = model.class_logits(images, classes, **extras)
        torch.testing.assert_close(loaded.class_logits(images, classes, **extras), expected)
    assert expected.shape == (2, 3)
