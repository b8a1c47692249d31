"""clipmg: micro-gesture classification by vision-language contrastive learning.

    import clipmg

    model = clipmg.create_model("openclip:clipmg-small")             # or load_checkpoint("run/best")
    clipmg.train(clipmg.TrainConfig(metadata="train.xlsx", labels="Clip_label.csv", output="run"))
    classifier = clipmg.Classifier.from_checkpoint("run/best")      # images in, (B, C) logits out
    clipmg.predict_csv("run/best", "frames.csv")                     # what test.py does
    metrics = clipmg.evaluate("run/best", "run/split.csv", split="run/split.csv")

The names are imported on first use, so `import clipmg` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "create_model": "clipmg.models",
    "load_checkpoint": "clipmg.checkpoint",
    "Classifier": "clipmg.inference",
    "train": "clipmg.training",
    "TrainConfig": "clipmg.training",
    "predict_csv": "clipmg.inference",
    "evaluate": ("clipmg.inference", "evaluate_checkpoint"),
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'clipmg' has no attribute {name!r}")
    module, attribute = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
