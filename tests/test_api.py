"""The public API (`clipmg/__init__.py`) and the README's Python example, run as written (with the
data folder pointed at the generated dataset)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch

import clipmg

REPO = Path(__file__).resolve().parent.parent
API = ("create_model", "load_checkpoint", "Classifier", "train", "TrainConfig", "predict_csv", "evaluate")


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its marked Python example"
    return match.group(1)


def test_the_api_names_are_the_library_functions():
    from clipmg.checkpoint import load_checkpoint
    from clipmg.inference import Classifier, evaluate_checkpoint, predict_csv
    from clipmg.models import create_model
    from clipmg.training import TrainConfig, train

    assert set(API) <= set(clipmg.__all__)
    expected = (create_model, load_checkpoint, Classifier, train, TrainConfig, predict_csv, evaluate_checkpoint)
    for name, value in zip(API, expected):
        assert getattr(clipmg, name) is value, name


def test_the_readme_example_runs(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames = pd.read_excel(tiny_dataset / "training" / "train.xlsx").head(5)
    frames[["Path"]].to_csv(tmp_path / "new_frames.csv", index=False)
    code = readme_example().replace("DATA/", f"{tiny_dataset.as_posix()}/")
    # the same run, quicker: the tiny model for two epochs
    code = code.replace('output="runs/api")', 'output="runs/api", model="openclip:clipmg-tiny", epochs=2, '
                                               'workers=0, tensorboard=False)')
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["summary"]["epochs_run"] == 2
    assert 0.0 <= namespace["metrics"]["top1"] <= 1.0
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 5
    classifier = namespace["classifier"]
    size = classifier.preprocess["image_size"]
    assert classifier.logits(torch.zeros(2, 3, size, size, dtype=torch.uint8)).shape == (2, 4)
