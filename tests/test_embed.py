"""`clipmg embed` and the trainer's projector: the run written is loaded by TensorBoard's own
projector plugin (served through its WSGI app, as `tensorboard --logdir` serves it), and its
tensor, metadata rows and sprite are checked; sampling is stratified and deterministic; the map
PNG is drawn with PCA and t-SNE; the hybrid backend works as well."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipmg.checkpoint import save_checkpoint
from clipmg.cli import main
from clipmg.data import load_image, load_labels, read_metadata, sample_frames
from clipmg.errors import ImageError
from clipmg.inference import Classifier
from clipmg.jobs.embed import embed_checkpoint
from clipmg.prompts import PromptSet
from clipmg.visual import METADATA_HEADER, embed_frames, plot_embedding_map, write_projector

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paths(tiny_dataset):
    """The conftest dataset: 4 classes, 16 clips of 2 frames (32 frames) at 64 px."""
    return {"metadata": tiny_dataset / "training" / "train.xlsx", "labels": tiny_dataset / "Clip_label.csv",
            "root": tiny_dataset / "training"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, paths):
    from clipmg.models import create_model

    labels = load_labels(paths["labels"])
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(folder, model, {"class_ids": list(labels), "class_names": list(labels.values()),
                                    "prompts": PromptSet(templates=["a person {}", "{}"]).to_dict(),
                                    "preprocess": model.preprocess_config, "epoch": 3})
    return folder


def projector_client(logdir):
    """TensorBoard's projector plugin behind its WSGI app, reading `logdir` as the server does."""
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector import projector_plugin
    from werkzeug import test as werkzeug_test
    from werkzeug import wrappers

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=multiplexer)
    plugin = projector_plugin.ProjectorPlugin(context)
    app = application.TensorBoardWSGI([plugin])
    return werkzeug_test.Client(app, wrappers.Response)


def read_projector(logdir) -> dict:
    """Every embedding of the run as the projector frontend gets it: config, tensor, metadata, sprite."""
    from io import BytesIO

    client = projector_client(logdir)
    base = "/data/plugin/projector"
    response = client.get(f"{base}/runs")
    assert response.status_code == 200
    runs = json.loads(response.get_data())
    assert runs, "the projector plugin found no run with embeddings"
    out = {}
    for run in runs:
        config = json.loads(client.get(f"{base}/info?run={run}").get_data())
        for info in config["embeddings"]:
            name = info["tensorName"]
            rows, dim = (int(x) for x in info["tensorShape"])
            query = f"run={run}&name={name}"
            tensor = client.get(f"{base}/tensor?{query}")
            assert tensor.status_code == 200, tensor.get_data()
            matrix = np.frombuffer(tensor.get_data(), dtype=np.float32).reshape(rows, dim)
            metadata = client.get(f"{base}/metadata?{query}")
            assert metadata.status_code == 200, metadata.get_data()
            lines = metadata.get_data().decode("utf-8").rstrip("\n").split("\n")
            sprite = None
            if info.get("sprite"):
                response = client.get(f"{base}/sprite_image?{query}")
                assert response.status_code == 200, response.get_data()
                sprite = (Image.open(BytesIO(response.get_data())), [int(x) for x in info["sprite"]["singleImageDim"]])
            out[name] = {"run": run, "matrix": matrix, "header": lines[0].split("\t"),
                         "rows": [line.split("\t") for line in lines[1:]], "sprite": sprite}
    return out


def test_sample_frames_is_stratified_capped_and_deterministic():
    counts = {1: 300, 2: 40, 3: 5, 4: 1, 5: 120}
    frames = pd.DataFrame({"class_id": [c for c, n in counts.items() for _ in range(n)]})
    frames["path"] = [f"f{i}.jpg" for i in range(len(frames))]
    sample = sample_frames(frames, max_images=100, seed=3)
    assert len(sample) == 100
    taken = sample["class_id"].value_counts().to_dict()
    assert taken[3] == 5 and taken[4] == 1  # rare classes keep all their frames
    assert set(taken.values()) - {5, 1} <= {31, 32}  # the rest share the budget evenly
    assert sample.index.is_monotonic_increasing and not sample.index.duplicated().any()
    assert sample.equals(sample_frames(frames, max_images=100, seed=3))
    assert not sample.equals(sample_frames(frames, max_images=100, seed=4))
    per = sample_frames(frames, max_images=None, per_class=10, seed=0)["class_id"].value_counts().to_dict()
    assert per == {1: 10, 2: 10, 3: 5, 4: 1, 5: 10}
    assert len(sample_frames(frames, max_images=0)) == len(frames)
    assert len(sample_frames(frames, max_images=10_000)) == len(frames)


def test_embed_writes_a_projector_run_tensorboard_reads(checkpoint, paths, tmp_path):
    logdir = tmp_path / "embed"
    summary = embed_checkpoint(checkpoint, paths["metadata"], logdir, max_images=12, seed=1, workers=0,
                               thumb_size=16)
    frames = read_metadata(paths["metadata"], load_labels(paths["labels"]))
    expected = sample_frames(frames, max_images=12, seed=1)
    assert summary["n_images"] == 12 and summary["n_prompts"] == 4 and summary["global_step"] == 3
    assert summary["per_class"] == {1: 3, 2: 3, 3: 3, 4: 3}

    embeddings = read_projector(logdir)
    assert list(embeddings) == ["clipmg:00003"]
    emb = embeddings["clipmg:00003"]
    assert emb["matrix"].shape == (12 + 4, summary["dim"])
    assert np.allclose(np.linalg.norm(emb["matrix"], axis=1), 1.0, atol=1e-4)
    assert emb["header"] == list(METADATA_HEADER)
    assert len(emb["rows"]) == 16 and all(len(row) == len(METADATA_HEADER) for row in emb["rows"])
    table = pd.DataFrame(emb["rows"], columns=emb["header"])
    images, prompts = table[table["kind"] == "image"], table[table["kind"] == "prompt"]
    names = load_labels(paths["labels"])
    assert list(images["path"]) == list(expected["path"])
    assert list(images["true_class"]) == [names[c] for c in expected["class_id"]]
    assert list(images["clip_id"]) == [str(v) for v in expected["video_id"]]
    assert list(images["frame_id"]) == [str(v) for v in expected["frame_id"]]
    assert set(images["correct"]) <= {"yes", "no"}
    assert ((images["true_class"] == images["pred_class"]) == (images["correct"] == "yes")).all()
    assert summary["top1"] == pytest.approx((images["correct"] == "yes").mean())
    assert list(prompts["true_class"]) == list(names.values())
    assert prompts["path"].iloc[0] == f"a person {list(names.values())[0]} (+1 more templates)"
    # The prompt points are the classifier's class embeddings.
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu")
    assert np.allclose(emb["matrix"][12:], classifier.class_embeddings.numpy(), atol=1e-5)

    sprite, tile = emb["sprite"]
    side = math.ceil(math.sqrt(16)) * 16
    assert tile == [16, 16] and sprite.size == (side, side)
    assert summary["map"] and Image.open(summary["map"]).size[0] > 300


def test_cli_embed_reruns_and_adds_tags(checkpoint, paths, tmp_path, capsys):
    logdir = tmp_path / "runs" / "embed"
    split = tmp_path / "split.csv"
    assert main(["-q", "split", "--metadata", str(paths["metadata"]), "--labels", str(paths["labels"]),
                 "--out", str(split)]) == 0
    args = ["-q", "embed", "--checkpoint", str(checkpoint), "--metadata", str(split), "--split", str(split),
            "--subset", "val", "--logdir", str(logdir), "--workers", "0", "--image-root", str(paths["root"]),
            "--thumb-size", "8", "--map", "none"]
    assert main(args) == 0
    assert "projector run" in capsys.readouterr().out
    assert main(args) == 0  # same tag and step: replaced, not duplicated
    assert main([*args, "--tag", "second", "--step", "7", "--max-images", "2"]) == 0
    embeddings = read_projector(logdir)
    assert sorted(embeddings) == ["clipmg:00003", "second:00007"]
    n_val = (pd.read_csv(split)["split"] == "val").sum()
    assert embeddings["clipmg:00003"]["matrix"].shape[0] == n_val + 4
    assert embeddings["second:00007"]["matrix"].shape[0] == 2 + 4
    assert not list(logdir.glob("*.png"))


def test_missing_image_fails_or_is_skipped(checkpoint, paths, tmp_path):
    frames = pd.read_excel(paths["metadata"])
    frames.loc[0, "Path"] = "1/nowhere.jpg"
    metadata = tmp_path / "frames.csv"
    frames.to_csv(metadata, index=False)
    common = {"image_root": paths["root"], "workers": 0, "max_images": 0, "map_method": None, "thumb_size": 0}
    with pytest.raises(ImageError, match=r"nowhere\.jpg.*row 2"):
        embed_checkpoint(checkpoint, metadata, tmp_path / "a", **common)
    summary = embed_checkpoint(checkpoint, metadata, tmp_path / "b", skip_missing=True, **common)
    assert summary["n_skipped"] == 1 and summary["n_images"] == len(frames) - 1
    assert "sprite" not in summary["files"]


def test_maps_pca_and_tsne(checkpoint, paths, tmp_path):
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu")
    frames = read_metadata(paths["metadata"], load_labels(paths["labels"]))
    emb = embed_frames(classifier, frames.iloc[:10], [paths["root"]], workers=0, thumb_size=None)
    for method in ("pca", "tsne"):
        png = plot_embedding_map(emb, tmp_path / f"{method}.png", method=method)
        assert Image.open(png).size[0] > 300


def test_hybrid_backend(paths, tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    from transformers import BertConfig, BertModel, BertTokenizer

    from clipmg.models import create_model

    folder = tmp_path / "bert"
    folder.mkdir()
    words = sorted({w.lower() for name in load_labels(paths["labels"]).values() for w in name.split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    model = create_model("hybrid", image="timm:test_resnet", text=f"hf:{folder}", embed_dim=8,
                         image_pretrained=False, image_size=32, temperature=0.05).eval()
    labels = load_labels(paths["labels"])
    classifier = Classifier.from_model(model, list(labels), list(labels.values()))
    frames = read_metadata(paths["metadata"], labels)
    emb = embed_frames(classifier, frames.iloc[::4], [paths["root"]], workers=0, thumb_size=8)
    with SummaryWriter(str(tmp_path / "tb")) as writer:
        write_projector(writer, emb, tag="hybrid")
    got = read_projector(tmp_path / "tb")["hybrid:00000"]
    assert got["matrix"].shape == (8 + 4, 8) and got["sprite"][0].size == (4 * 8, 4 * 8)


def test_trainer_logs_projector_and_confusion(tiny_train_settings, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from clipmg.training import TrainConfig, train

    settings = {**tiny_train_settings, "epochs": 2, "max_steps_per_epoch": 1, "tensorboard": True,
                "embed_every": 2, "embed_max_images": 5}
    train(TrainConfig(**settings).validate())
    logdir = tmp_path / "run" / "tensorboard"
    embeddings = read_projector(logdir)
    assert list(embeddings) == ["val:00002"]  # every 2nd epoch: the 2nd only
    emb = embeddings["val:00002"]
    assert emb["matrix"].shape[0] == 5 + 4
    assert [row[1] for row in emb["rows"]] == ["image"] * 5 + ["prompt"] * 4
    events = EventAccumulator(str(logdir), size_guidance={"images": 0})
    events.Reload()
    assert "val/confusion" in events.Tags()["images"]
    assert [event.step for event in events.Images("val/confusion")] == [1, 2]


def test_confusion_images_are_those_of_the_best_and_the_last_epoch(tiny_train_settings, tmp_path, monkeypatch):
    """Drawn once, at the end: best/'s epoch and the last, not every epoch that improved."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from clipmg.training import TrainConfig, train
    from clipmg.training.trainer import Trainer

    # a validation loss that improves at epochs 1 and 2, then worsens: best/ moves, then stays
    scripted = iter([3.0, 2.0, 2.5, 2.7])
    validate = Trainer.validate
    monkeypatch.setattr(Trainer, "validate", lambda self: {**validate(self), "loss": next(scripted)})
    settings = {**tiny_train_settings, "epochs": 4, "tensorboard": True, "monitor": "loss"}
    summary = train(TrainConfig(**settings).validate())
    assert summary["best_epoch"] == 2 and len(summary["history"]) == 4
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [event.step for event in events.Images("val/confusion")] == [2, 4]


def test_learned_prompts(checkpoint, paths, tmp_path):
    """A CoOp checkpoint (learned context vectors): the prompt points are its learned class
    embeddings, as the Classifier classifies with them."""
    from clipmg.checkpoint import load_checkpoint
    from clipmg.prompts import LEARNED_FILE, PromptLearner

    model, config = load_checkpoint(checkpoint)
    learned = PromptLearner.create(model, n_ctx=3, seed=0).to_prompt_set("openclip:clipmg-tiny")
    folder = tmp_path / "learned"
    save_checkpoint(folder, model, {**{k: v for k, v in config.items() if k not in ("model", "format_version")},
                                    "prompts": learned.to_dict()})
    learned.save(folder / LEARNED_FILE)
    summary = embed_checkpoint(folder, paths["metadata"], tmp_path / "tb", max_images=4, workers=0,
                               thumb_size=8, map_method=None)
    got = read_projector(tmp_path / "tb")[summary["tensor_name"]]
    classifier = Classifier.from_checkpoint(folder, device="cpu")
    assert np.allclose(got["matrix"][4:], classifier.class_embeddings.numpy(), atol=1e-5)
    plain = Classifier.from_checkpoint(checkpoint, device="cpu").class_embeddings.numpy()
    assert not np.allclose(got["matrix"][4:], plain, atol=1e-3)
    assert got["rows"][4][-1].startswith("[3 learned context vectors]")


def test_a_model_with_a_class_head_runs_its_image_tower_once_per_batch(paths):
    """Embeddings and logits of a linear-head model both come from one forward of its backbone."""
    from clipmg.models import create_model

    labels = load_labels(paths["labels"])
    torch.manual_seed(0)
    model = create_model("timm:test_resnet", num_classes=len(labels), image_size=32).eval()
    calls = []
    model.backbone.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    classifier = Classifier.from_model(model, list(labels), list(labels.values()))
    frames = read_metadata(paths["metadata"], labels).iloc[:8]
    emb = embed_frames(classifier, frames, [paths["root"]], workers=0, thumb_size=None, batch_size=4)
    assert calls == [4, 4]
    assert len(emb) == 8 and emb.logits.shape == (8, len(labels))
    transform = classifier.transform()
    images = torch.stack([transform(load_image(paths["root"] / p, max_size=transform.decode_size))
                          for p in frames["path"]])
    np.testing.assert_allclose(emb.logits, classifier.logits(images).numpy(), rtol=1e-4, atol=1e-5)
