"""Test-time tools on tiny checkpoints: TTA views average to plain prediction when they are the
identity, score-level ensembles (an ensemble of one is that checkpoint, weights weigh
probabilities, classes must agree), and WiSE-FT (alpha 0 and 1 are the two endpoints, a sweep
keeps the best alpha, mismatched architectures are refused)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from clipmg.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from clipmg.cli import main
from clipmg.errors import CheckpointError, DataError
from clipmg.inference import Classifier, Ensemble, evaluate_checkpoint, predict_csv, tta
from clipmg.jobs import wise
from clipmg.models import SupervisedModel, create_model
from clipmg.prompts import PromptSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASS_IDS = [1, 2, 3, 4]


def make_checkpoint(folder: Path, seed: int, model: str = "openclip:clipmg-tiny", class_ids=CLASS_IDS,
                    head: bool = False, names: list[str] | None = None) -> Path:
    torch.manual_seed(seed)
    net = create_model(model, image_size=32)
    if head:
        net = SupervisedModel.wrap(net, len(class_ids))
    names = names or [f"gesture {i}" for i in class_ids]
    return save_checkpoint(folder, net, {"class_ids": list(class_ids), "class_names": names,
                                         "prompts": PromptSet(templates=["a person {}"]).to_dict(),
                                         "preprocess": net.preprocess_config})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_dataset) -> list[Path]:
    """Two untrained tiny models over the tiny dataset's classes."""
    from clipmg.data import load_labels

    names = list(load_labels(tiny_dataset / "Clip_label.csv").values())
    root = tmp_path_factory.mktemp("ckpts")
    return [make_checkpoint(root / f"seed{seed}", seed, names=names) for seed in range(2)]


@pytest.fixture(scope="module")
def frames(tiny_dataset) -> Path:
    return tiny_dataset / "training" / "train.xlsx"


def images(seed: int = 0, batch: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ TTA
def test_tta_of_identity_views_equals_plain_prediction(checkpoints, monkeypatch):
    plain = Classifier.from_checkpoint(checkpoints[0], device="cpu")
    crops = Classifier.from_checkpoint(checkpoints[0], device="cpu", tta="crops")
    batch = images()
    monkeypatch.setattr(tta, "_crops", lambda x: [x.clone() for _ in range(5)])
    torch.testing.assert_close(crops.logits(batch), plain.logits(batch), rtol=1e-5, atol=1e-5)


def test_flip_tta_is_the_mean_of_the_frame_and_its_mirror(checkpoints):
    plain = Classifier.from_checkpoint(checkpoints[0], device="cpu")
    flip = Classifier.from_checkpoint(checkpoints[0], device="cpu", tta="flip")
    batch = images()
    expected = (plain.logits(batch) + plain.logits(torch.flip(batch, dims=[-1]))) / 2
    torch.testing.assert_close(flip.logits(batch), expected, rtol=1e-5, atol=1e-5)
    symmetric = torch.cat([batch[..., :16], torch.flip(batch[..., :16], dims=[-1])], dim=-1)
    torch.testing.assert_close(flip.logits(symmetric), plain.logits(symmetric), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(flip.logits(batch), plain.logits(batch))


def test_crop_views_keep_the_input_size():
    views = tta.tta_views(torch.randn(2, 3, 32, 32), {}, "crops")
    assert len(views) == 6 and all(v.shape == (2, 3, 32, 32) for v, _ in views)
    with pytest.raises(DataError, match="tta"):
        tta.tta_views(torch.randn(1, 3, 8, 8), {}, "rotate")


# ------------------------------------------------------------------------------------- ensembles
def test_ensemble_of_one_checkpoint_equals_that_checkpoint(checkpoints, frames, tmp_path):
    plain = predict_csv(checkpoints[0], frames, output=tmp_path / "plain.csv", device="cpu", workers=0)
    one = predict_csv([checkpoints[0]], frames, output=tmp_path / "one.csv", weights=[2.0], device="cpu", workers=0)
    a, b = pd.read_csv(plain["output"]), pd.read_csv(one["output"])
    assert (a["pred_class"] == b["pred_class"]).all()
    pd.testing.assert_frame_equal(a.filter(like="_prob"), b.filter(like="_prob"), atol=2e-6, rtol=0)
    assert one["metrics"]["top1"] == plain["metrics"]["top1"]
    assert one["metrics"]["macro_f1"] == pytest.approx(plain["metrics"]["macro_f1"])


def test_ensemble_averages_probabilities_with_weights(checkpoints):
    members = [Classifier.from_checkpoint(c, device="cpu") for c in checkpoints]
    ensemble = Ensemble.of(members, weights=[3, 1])
    batch = images()
    probabilities = [torch.softmax(m.logits(batch), dim=1) for m in members]
    (group,) = ensemble.groups()
    mixed = ensemble.probabilities(group, batch)
    torch.testing.assert_close(mixed, 0.75 * probabilities[0] + 0.25 * probabilities[1])
    torch.testing.assert_close(torch.softmax(ensemble.log(mixed), dim=1), mixed)


def test_ensemble_in_evaluate_and_the_cli(checkpoints, frames, tmp_path):
    metrics = evaluate_checkpoint(checkpoints, frames, device="cpu", workers=0, out_dir=tmp_path / "eval")
    assert metrics["checkpoint"].startswith("ensemble of") and metrics["n_images"] > 0
    assert (tmp_path / "eval" / "predictions.csv").is_file()
    code = main(["-q", "evaluate", "--metadata", str(frames), "--checkpoint", *map(str, checkpoints),
                 "--weights", "1", "2", "--tta", "flip", "--workers", "0", "--device", "cpu"])
    assert code == 0
    assert (checkpoints[0].parent / "eval" / "ensemble-of-2-tta-flip" / "metrics.json").is_file()


def test_ensemble_of_different_classes_is_refused(checkpoints, tmp_path):
    other = make_checkpoint(tmp_path / "other", 0, class_ids=[1, 2, 3, 5])
    with pytest.raises(CheckpointError, match="same classes"):
        Ensemble.from_checkpoints([checkpoints[0], other], device="cpu")
    with pytest.raises(DataError, match="weights"):
        Ensemble.from_checkpoints(checkpoints, weights=[1.0], device="cpu")


# ---------------------------------------------------------------------------------------- WiSE-FT
@pytest.mark.parametrize("alpha,end", [(0.0, 0), (1.0, 1)])
def test_wise_alpha_0_and_1_reproduce_the_endpoints(checkpoints, tmp_path, alpha, end):
    folder = wise.wise_checkpoint(checkpoints[0], checkpoints[1], alpha, tmp_path / "wise")
    batch = images()
    made = Classifier.from_checkpoint(folder, device="cpu")
    endpoint = Classifier.from_checkpoint(checkpoints[end], device="cpu")
    torch.testing.assert_close(made.logits(batch), endpoint.logits(batch), rtol=0, atol=0)
    assert read_checkpoint_config(folder)["wise"]["alpha"] == alpha


def test_wise_interpolates_every_floating_tensor(checkpoints, tmp_path):
    folder = wise.wise_checkpoint(checkpoints[0], checkpoints[1], 0.25, tmp_path / "wise")
    states = [load_checkpoint(f)[0].state_dict() for f in (*checkpoints, folder)]
    for key, value in states[2].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * states[0][key] + 0.25 * states[1][key])
    assert any("running_mean" in key for key in states[2])  # BatchNorm statistics are interpolated too


def test_wise_refuses_two_architectures(checkpoints, tmp_path):
    vit = make_checkpoint(tmp_path / "vit", 0, model="openclip:clipmg-tiny-vit")
    with pytest.raises(CheckpointError, match="one architecture"):
        wise.wise_checkpoint(checkpoints[0], vit, 0.5, tmp_path / "out")
    head = make_checkpoint(tmp_path / "head", 0, head=True)
    with pytest.raises(CheckpointError, match="linear class head"):
        wise.wise_checkpoint(checkpoints[0], head, 0.5, tmp_path / "out")


def test_wise_sweep_keeps_the_best_alpha(checkpoints, frames, tmp_path):
    code = main(["-q", "wise", "--from", str(checkpoints[0]), "--to", str(checkpoints[1]), "--alpha", "0:1:0.5",
                 "--metadata", str(frames), "--metric", "macro_f1", "--out", str(tmp_path / "best"),
                 "--workers", "0", "--device", "cpu"])
    assert code == 0
    table = pd.read_csv(tmp_path / "best-sweep" / "sweep.csv")
    assert list(table["alpha"]) == [0.0, 0.5, 1.0]
    chosen = read_checkpoint_config(tmp_path / "best")["wise"]["alpha"]
    assert table.loc[table["alpha"] == chosen, "macro_f1"].item() == pytest.approx(table["macro_f1"].max(), abs=1e-4)


def test_parse_alphas():
    assert wise.parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert wise.parse_alphas("0.3,0.7") == [0.3, 0.7]
    for bad in ("2", "0:1:0", "x"):
        with pytest.raises(DataError):
            wise.parse_alphas(bad)
