"""`clipmg lab` without a browser: the computation layer (features cached on disk, prompts
encoded once, metrics equal to `clipmg prompts evaluate`'s, search, mistakes, clips), the JSON
API served on 127.0.0.1, and its one-line errors."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from clipmg.checkpoint import save_checkpoint
from clipmg.errors import CheckpointError, ClipmgError, DataError
from clipmg.lab import Lab
from clipmg.models import create_model
from clipmg.prompts import PromptSet, load_prompt_set


def make_checkpoint(folder: Path, dataset: Path) -> Path:
    from clipmg.data import load_labels

    labels = load_labels(dataset / "Clip_label.csv")
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    return save_checkpoint(folder, model, {
        "class_ids": list(labels), "class_names": list(labels.values()),
        "prompts": PromptSet(templates=["{}"]).to_dict(), "preprocess": model.preprocess_config})


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("lab") / "run" / "best", tiny_dataset)


@pytest.fixture(scope="module")
def metadata(tiny_dataset) -> Path:
    return tiny_dataset / "training" / "train.xlsx"


@pytest.fixture(scope="module")
def lab(checkpoint, metadata, one_torch_thread) -> Lab:
    return Lab.open(checkpoint, metadata, device="cpu", workers=0)


def test_features_are_cached_beside_the_checkpoint_and_read_back_on_the_next_start(checkpoint, metadata, lab,
                                                                                  monkeypatch):
    assert lab.frames.cache_file.parent == checkpoint.parent / "lab" / checkpoint.name
    assert lab.frames.cache_file.is_file()

    def no_encoding(*args, **kwargs):
        raise AssertionError("the cached features should have been read")

    monkeypatch.setattr("clipmg.lab.features.encode_frames", no_encoding)
    again = Lab.open(checkpoint, metadata, device="cpu", workers=0)
    assert again.frames.from_cache
    assert torch.equal(again.encoded.scoring, lab.encoded.scoring)
    assert again.encoded.frames["path"].tolist() == lab.encoded.frames["path"].tolist()
    assert np.array_equal(again.encoded.targets, lab.encoded.targets)


def test_other_metadata_content_gets_other_features(checkpoint, metadata, lab, tmp_path):
    import pandas as pd

    frames = pd.read_excel(metadata)
    fewer = tmp_path / "training" / "fewer.csv"
    (tmp_path / "training").symlink_to(metadata.parent, target_is_directory=True)
    frames.iloc[:10].to_csv(fewer, index=False)
    other = Lab.open(checkpoint, fewer, device="cpu", workers=0, cache_dir=tmp_path / "cache")
    assert not other.frames.from_cache and len(other.encoded) == 10
    assert other.frames.cache_file.name != lab.frames.cache_file.name


@pytest.mark.parametrize("name", ["photo", "classnames"])
def test_the_labs_metrics_equal_clipmg_prompts_evaluates_for_the_same_set(checkpoint, metadata, lab, name,
                                                                          tmp_path):
    from clipmg.jobs.prompt_eval import evaluate_prompt_sets

    lab.load_prompts(name)
    evaluate_prompt_sets([name], metadata, checkpoint=checkpoint, out_dir=tmp_path, device="cpu", workers=0,
                         tensorboard=False)
    expected = json.loads((tmp_path / "prompts.json").read_text())["sets"][name]
    shown = lab.state()["metrics"]
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "clip_top5", "loss", "n_images"):
        assert shown[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
    assert shown["top1"] == expected["top1"] and shown["macro_f1"] == expected["macro_f1"]


def test_an_edit_encodes_only_the_changed_prompts_and_changes_that_class(lab):
    lab.load_prompts("photo")
    before = lab.view
    templates = list(before.prompt_set.templates)
    names = lab.class_names
    # Class 1 described exactly as class 0 is named: same texts, same embedding, so every frame
    # that class 1 won goes to class 0 (the first of a tie).
    lab.set_prompts(templates, {lab.class_ids[1]: names[0]})
    assert lab.last_encoded == 0  # those texts were encoded for class 0 already
    assert torch.equal(lab.class_embeddings(lab.view.prompt_set)[1], lab.class_embeddings(lab.view.prompt_set)[0])
    assert not (lab.view.preds == 1).any()
    lab.set_prompts(templates, {lab.class_ids[1]: "someone puffing out the cheeks"})
    assert lab.last_encoded == len(templates)  # one class, its templates; the others kept
    state = lab.state()
    assert state["prompts"]["classes"][1]["texts"][0] == templates[0].format("someone puffing out the cheeks")
    assert state["prompts"]["classes"][0]["subject"] == names[0]


def test_a_template_without_its_slot_is_refused(lab):
    with pytest.raises(DataError, match="exactly one"):
        lab.set_prompts(["a photo of a person"], {})
    with pytest.raises(DataError, match="not one of the checkpoint"):
        lab.set_prompts(["{}"], {999: "x"})
    with pytest.raises(DataError, match="not one of the lab's"):
        lab.load_prompts("/etc/hostname")


def test_a_saved_set_is_a_prompt_file_that_prompts_evaluate_scores_the_same(checkpoint, metadata, lab, tmp_path):
    from clipmg.jobs.prompt_eval import evaluate_prompt_sets

    lab.set_prompts(["a photo of a person {}.", "{}"], {lab.class_ids[2]: "someone touching the hat"})
    files = lab.save_prompts("my set")
    loaded = load_prompt_set(files["prompts"])
    assert loaded.templates == ["a photo of a person {}.", "{}"]
    assert loaded.subject(lab.class_names[2], lab.class_ids[2]) == "someone touching the hat"
    saved = json.loads(files["metrics"].read_text())
    evaluate_prompt_sets([str(files["prompts"])], metadata, checkpoint=checkpoint, out_dir=tmp_path, device="cpu",
                         workers=0, tensorboard=False)
    expected = json.loads((tmp_path / "prompts.json").read_text())["sets"]["my_set"]
    assert saved["metrics"]["top1"] == expected["top1"]
    assert saved["metrics"]["balanced_accuracy"] == expected["balanced_accuracy"]
    assert "my_set" in lab.prompt_sets()


def test_text_search_ranks_frames_by_cosine_and_a_frame_finds_its_neighbours(lab):
    found = lab.search("a person touching the hat", k=5)
    query = lab.encode_texts(["a person touching the hat"])[0].numpy()
    expected = np.sort(lab.encoded.embeddings @ query)[::-1][:5]
    assert [round(f["score"], 5) for f in found] == [round(float(s), 5) for s in expected]
    similar = lab.similar(3, k=4)
    assert similar["frame"]["index"] == 3 and 3 not in [f["index"] for f in similar["nearest"]]
    scores = [f["score"] for f in similar["nearest"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 4
    assert [c["prob"] for c in similar["top"]] == sorted((c["prob"] for c in similar["top"]), reverse=True)
    with pytest.raises(DataError, match="type a phrase"):
        lab.search("  ")


def test_mistakes_of_a_class_pair_are_the_confusion_cells_frames(lab):
    lab.load_prompts("classnames")
    cm = lab.view.confusion
    true, pred = np.argwhere((cm > 0) & ~np.eye(len(cm), dtype=bool))[0]
    shown = lab.mistakes(int(true), int(pred), limit=50)
    assert shown["count"] == cm[true, pred] == len(shown["frames"])
    assert all(f["true"]["index"] == true and f["pred"]["index"] == pred for f in shown["frames"])
    probs = [f["prob"] for f in shown["frames"]]
    assert probs == sorted(probs, reverse=True)
    every = lab.mistakes(int(true), None, limit=2)
    assert every["count"] == cm[true].sum() - cm[true, true] and len(every["frames"]) <= 2


def test_a_clips_strip_is_its_frames_in_order_with_the_mean_logit_prediction(lab):
    clips = lab.clips()
    assert sum(c["frames"] for c in clips) == len(lab.encoded)
    strip = lab.clip(clips[0]["video_id"])
    positions = [f["index"] for f in strip["frames"]]
    assert [lab.encoded.frames["frame_id"].iat[i] for i in positions] == sorted(
        lab.encoded.frames["frame_id"].iat[i] for i in positions)
    mean = lab.view.logits[positions].mean(dim=0)
    assert strip["top"][0]["index"] == int(mean.argmax()) == clips[0]["pred"]["index"]
    with pytest.raises(DataError, match="no clip"):
        lab.clip("no such clip")


def test_thumbnails_are_made_on_request(lab):
    data = lab.thumbnail_jpeg(0)
    assert data[:2] == b"\xff\xd8"


def test_bad_input_gets_one_line_errors(tmp_path, metadata, checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        Lab.open(tmp_path / "nothing", metadata, device="cpu")
    import pandas as pd

    no_class = tmp_path / "training" / "frames.csv"
    no_class.parent.mkdir()
    pd.read_excel(metadata).drop(columns="Class").to_csv(no_class, index=False)
    with pytest.raises(DataError, match="Class"):
        Lab.open(checkpoint, no_class, device="cpu")


# ------------------------------------------------------------------ the server and the CLI
def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()) if response.headers["Content-Type"].startswith("application/json") \
            else response.read()


def test_the_server_answers_on_127_0_0_1_and_refuses_a_port_in_use(lab):
    pytest.importorskip("starlette")
    from clipmg.lab.server import LabServer

    with LabServer(lab, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        state = get(server.url + "api/state")
        assert state["n_frames"] == len(lab.encoded) and len(state["confusion"]) == len(lab.class_ids)
        edited = get(server.url + "api/prompts", {"templates": ["{}"], "subjects": {}})
        assert edited["prompts"]["templates"] == ["{}"]
        assert get(server.url + "thumb/0")[:2] == b"\xff\xd8"
        assert "lab.js" in get(server.url).decode()
        with pytest.raises(urllib.error.HTTPError) as bad:
            get(server.url + "api/prompts", {"templates": ["no slot"]})
        assert "exactly one" in json.loads(bad.value.read())["error"]
        with pytest.raises(ClipmgError, match=f"port {server.port} on 127.0.0.1 is in use"):
            LabServer(lab, port=server.port)


def test_the_cli_says_in_one_line_what_is_wrong(tmp_path, metadata, checkpoint, capsys, monkeypatch):
    from clipmg.cli import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        assert main(["lab", "--checkpoint", str(checkpoint), "--metadata", str(metadata), "--port", str(port)]) == 2
    finally:
        taken.close()
    assert "is in use" in capsys.readouterr().err
    assert main(["lab", "--checkpoint", str(tmp_path / "missing"), "--metadata", str(metadata), "--port", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    import pandas as pd

    no_path = tmp_path / "training" / "frames.csv"
    no_path.parent.mkdir()
    pd.read_excel(metadata).drop(columns="Path").to_csv(no_path, index=False)
    assert main(["lab", "--checkpoint", str(checkpoint), "--metadata", str(no_path), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "Path" in error and error.startswith("error: ") and error.count("\n") == 1
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert main(["lab", "--checkpoint", str(checkpoint), "--metadata", str(metadata)]) == 2
    assert "pip install 'clipmg[lab]'" in capsys.readouterr().err
