"""`clipmg export`: the ONNX graph gives PyTorch's logits (onnxruntime, batch sizes 1 and 37) for
an open_clip model and a supervised baseline; models with per-frame MediaPipe inputs are refused;
the open_clip folder loads in open_clip with the same image and text features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipmg.checkpoint import save_checkpoint
from clipmg.cli import main
from clipmg.errors import ModelError
from clipmg.inference import Classifier
from clipmg.models import HandCropModel, PoseFusionModel, create_model
from clipmg.prompts import PromptSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASS_IDS = [3, 5, 9]
CLASS_NAMES = ["Folding arms", "Scratching head", "Touching nose"]


def write_checkpoint(folder: Path, model, **extra) -> Path:
    return save_checkpoint(folder, model, {"class_ids": CLASS_IDS, "class_names": CLASS_NAMES,
                                           "prompts": PromptSet(templates=["a person {}", "{}"]).to_dict(),
                                           "preprocess": model.preprocess_config, **extra})


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    with torch.no_grad():
        model.logit_scale.fill_(3.1)  # a trained scale, not the initial one: it must travel
    return write_checkpoint(tmp_path_factory.mktemp("clip") / "best", model)


@pytest.fixture(scope="module")
def supervised_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("timm:test_resnet", head="linear", num_classes=len(CLASS_IDS), image_size=48)
    return write_checkpoint(tmp_path_factory.mktemp("supervised") / "best", model)


# ------------------------------------------------------------------------------------- ONNX
def onnx_logits(path: Path, images: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images.numpy()})[0]


def check_onnx_equals_pytorch(checkpoint: Path, out: Path, input: str = "uint8") -> dict:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from clipmg.export import export_onnx

    summary = export_onnx(checkpoint, out, input=input)
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu")
    size = classifier.preprocess["image_size"]
    generator = torch.Generator().manual_seed(7)
    for batch in (1, 37):
        if input == "uint8":
            images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
        else:
            images = torch.randn((batch, 3, size, size), generator=generator)
        expected = classifier.logits(images).numpy()
        got = onnx_logits(out, images)
        assert got.shape == (batch, len(CLASS_IDS))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        assert np.abs(expected).max() > 1e-2  # not a graph of zeros
    assert set(summary["max_abs_diff"]) == {1, 37} and max(summary["max_abs_diff"].values()) <= 1e-4
    return summary


def test_onnx_of_an_open_clip_checkpoint_gives_its_logits(clip_checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    check_onnx_equals_pytorch(clip_checkpoint, out)
    import onnx

    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["clipmg_class_ids"]) == CLASS_IDS
    assert json.loads(props["clipmg_class_names"]) == CLASS_NAMES
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")  # dynamic batch
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # no partial file left over


@pytest.mark.parametrize("input", ["uint8", "float"])
def test_onnx_of_a_supervised_baseline_gives_its_logits(supervised_checkpoint, tmp_path, input):
    check_onnx_equals_pytorch(supervised_checkpoint, tmp_path / "supervised.onnx", input=input)


@pytest.mark.parametrize("wrapper", ["hand_crops", "pose_fusion"])
def test_models_with_per_frame_mediapipe_inputs_are_refused(wrapper, tmp_path, capsys):
    from clipmg.export import export_onnx

    torch.manual_seed(0)
    inner = create_model("openclip:clipmg-tiny")
    model = HandCropModel(inner) if wrapper == "hand_crops" else PoseFusionModel(inner, fusion="concat")
    folder = write_checkpoint(tmp_path / "ckpt", model)
    with pytest.raises(ModelError, match="cannot be exported to ONNX.*MediaPipe"):
        export_onnx(folder, tmp_path / "x.onnx")
    assert main(["export", "--checkpoint", str(folder), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "MediaPipe" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------------------------- open_clip
def test_open_clip_round_trip_gives_the_same_features(clip_checkpoint, tmp_path, capsys, monkeypatch):
    import open_clip

    # open_clip's config registry is process-wide: the config registered here goes with the test
    monkeypatch.setattr(open_clip.factory, "_MODEL_CONFIG_PATHS", list(open_clip.factory._MODEL_CONFIG_PATHS))
    monkeypatch.setattr(open_clip.factory, "_MODEL_CONFIGS", dict(open_clip.factory._MODEL_CONFIGS))

    out = tmp_path / "oc"
    assert main(["export", "--format", "open_clip", "--checkpoint", str(clip_checkpoint), "--out", str(out),
                 "--name", "clipmg-tiny-exported"]) == 0
    assert "create_model_and_transforms('clipmg-tiny-exported'" in capsys.readouterr().out
    ours = Classifier.from_checkpoint(clip_checkpoint, device="cpu").model

    open_clip.add_model_config(out / "clipmg-tiny-exported.json")
    theirs, _, preprocess = open_clip.create_model_and_transforms(
        "clipmg-tiny-exported", pretrained=str(out / "open_clip_model.safetensors"))
    theirs.eval()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    texts = ["a person folding arms", "scratching head", "touching nose while talking"]
    tokenizer = open_clip.get_tokenizer("clipmg-tiny-exported")
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode_image(images, normalize=True), ours.encode_image(images),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(theirs.encode_text(tokenizer(texts), normalize=True), ours.encode_text(texts),
                                   rtol=0, atol=1e-5)
    assert theirs.logit_scale.item() == pytest.approx(3.1)

    # the Hub / local-dir layout carries the checkpoint's preprocessing too
    local, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    assert local.visual.preprocess_cfg["mean"] == pytest.approx(ours.preprocess_config["mean"])
    # and the folder is still a clipmg checkpoint, with a card saying how open_clip loads it
    again = Classifier.from_checkpoint(out, device="cpu")
    torch.testing.assert_close(again.logits(images), Classifier.from_checkpoint(clip_checkpoint, device="cpu")
                               .logits(images))
    assert "open_clip.create_model_and_transforms(\"clipmg-tiny-exported\"" in (out / "README.md").read_text()


def test_open_clip_export_refuses_other_backends(supervised_checkpoint, tmp_path):
    from clipmg.export import export_open_clip

    with pytest.raises(ModelError, match="plain openclip: checkpoints"):
        export_open_clip(supervised_checkpoint, tmp_path / "oc")
