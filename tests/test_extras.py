"""Per-frame inputs besides the image (`extra_inputs`): datasets attach them, training,
validation and prediction pass them to the model, and a missing loader or a misaligned field is
a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clipmg import data as cdata
from clipmg.errors import DataError, ModelError
from clipmg.inference import Classifier, score_images
from clipmg.models import OpenClipModel, create_model, model_extras

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ShiftedModel(OpenClipModel):
    """A tiny model whose image features are shifted by a per-frame input."""

    extra_inputs = ("shift",)

    def encode_image(self, images, normalize=True, shift=None):
        features = super().encode_image(images, normalize=False)
        features = features + shift.to(features.dtype)[:, None]
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features


@pytest.fixture(autouse=True)
def shift_loader():
    @cdata.register_extra_field("shift")
    def load_shift(paths, roots, options):
        return np.array([float(len(p)) * options.get("shift_scale", 1.0) for p in paths], dtype=np.float32)

    yield
    cdata.EXTRA_FIELD_LOADERS.pop("shift", None)


def test_load_extra_fields_aligns_rows_and_names_unknown_inputs():
    fields = cdata.load_extra_fields(["shift"], ["a.jpg", "bb.jpg"], [], {"shift_scale": 2.0})
    np.testing.assert_allclose(fields["shift"], [10.0, 12.0])
    assert cdata.load_extra_fields([], ["a.jpg"], []) == {}
    with pytest.raises(ModelError, match="'gaze'.*known: .*shift"):
        cdata.load_extra_fields(["gaze"], ["a.jpg"], [])


def test_frame_dataset_attaches_extra_fields(tiny_dataset):
    frames = cdata.read_metadata(tiny_dataset / "training" / "train.xlsx",
                                 labels=cdata.load_labels(tiny_dataset / "Clip_label.csv")).head(3)
    transform = cdata.create_transform(32, train=False)
    values = np.arange(3, dtype=np.float32)
    dataset = cdata.FrameDataset(frames, tiny_dataset / "training", transform, extra_fields={"shift": values})
    batch = cdata.collate_frames([dataset[i] for i in range(3)])
    torch.testing.assert_close(batch["shift"], torch.arange(3.0))
    with pytest.raises(DataError, match="'shift' has 2 rows; the metadata has 3"):
        cdata.FrameDataset(frames, tiny_dataset / "training", transform, extra_fields={"shift": values[:2]})
    with pytest.raises(DataError, match="replace"):
        cdata.FrameDataset(frames, tiny_dataset / "training", transform, extra_fields={"image": values})


def test_prediction_passes_extras_to_the_model(tiny_dataset):
    torch.manual_seed(0)
    base = create_model("openclip:clipmg-tiny")
    model = ShiftedModel.from_config(base.model_config)
    model.load_state_dict(base.state_dict())
    labels = cdata.load_labels(tiny_dataset / "Clip_label.csv")
    frames = cdata.read_metadata(tiny_dataset / "training" / "train.xlsx", labels=labels).head(6)
    classifier = Classifier.from_model(model, list(labels), list(labels.values()))
    roots = [tiny_dataset / "training"]
    scored = score_images(classifier, frames["path"].to_numpy(), np.arange(6), roots, source="t", workers=0,
                          batch_size=4)
    transform = classifier.transform()
    images = classifier.prepare_images(torch.stack([transform(cdata.load_image(roots[0] / p)) for p in frames["path"]]))
    shift = torch.tensor([float(len(p)) for p in frames["path"]])
    expected = model.class_logits(images, classifier.class_embeddings, shift=shift)
    torch.testing.assert_close(scored.logits, expected.detach(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected, model.class_logits(images, classifier.class_embeddings,
                                                           shift=torch.zeros(6)))


def test_model_extras_says_what_the_batch_lacks():
    model = ShiftedModel.from_config(create_model("openclip:clipmg-tiny").model_config)
    with pytest.raises(ModelError, match="needs shift"):
        model_extras(model, {"image": torch.zeros(1)})
    assert set(model_extras(model, {"shift": torch.zeros(2)})) == {"shift"}
    assert model_extras(create_model("openclip:clipmg-tiny"), {"image": torch.zeros(1)}) == {}


def test_validation_and_training_see_the_extras(tiny_train_settings, monkeypatch):
    from clipmg.training import TrainConfig
    from clipmg.training.trainer import Trainer

    seen = []
    original = ShiftedModel.encode_image

    def spy(self, images, normalize=True, shift=None):
        seen.append(shift.clone())
        return original(self, images, normalize=normalize, shift=shift)

    monkeypatch.setattr(ShiftedModel, "encode_image", spy)
    trainer = Trainer(TrainConfig(**{**tiny_train_settings, "epochs": 1, "max_steps_per_epoch": 1}).validate())
    build = trainer._build_model
    monkeypatch.setattr(trainer, "_build_model",
                        lambda: ShiftedModel.from_config(build().model_config))
    trainer.fit()
    shifts = torch.cat(seen)
    expected = {float(len(p)) for p in pd.concat([trainer.train_df, trainer.val_df])["path"]}
    assert shifts.numel() > 0 and set(shifts.tolist()) <= expected
