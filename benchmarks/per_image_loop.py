"""The per-image loop test.py is compared with: every class prompt encoded again for every
image, one image at a time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.machine import load_average, torch_threads
from clipmg import data as cdata


class StockOpenClipText:
    """open_clip's own `encode_text` on prompts padded to the full context length (77 tokens
    for CLIP): what a per-image loop written on stock open_clip runs for every image."""

    def __init__(self, model):
        self.model = model

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        tokens = self.model.tokenizer(list(texts)).to(self.model.device)
        return self.model.clip.encode_text(tokens, normalize=normalize)


def loop_text_encoders(model) -> dict:
    """The text encodings the per-image loop is run with: `longest` (the model's own
    `encode_text`: prompts padded only to the longest one, the cheapest a loop can do; the
    target's loop) and, for open_clip models, `context` (open_clip's `encode_text`:
    every prompt padded to the context length)."""
    encoders = {"longest": model}
    if hasattr(model, "clip") and hasattr(model, "tokenizer"):
        encoders["context"] = StockOpenClipText(model)
    return encoders


def measure_per_image_loop(classifier, paths: Sequence[str], image_root: Path, threads: int,
                           text_encoder=None) -> dict:
    """What the original project did: for each image, encode every class prompt again (with
    `text_encoder`, default the model's own) and the image alone (batch size 1)."""
    from clipmg.prompts import PromptSet, build_class_embeddings

    prompt_set = PromptSet.from_dict(classifier.config.get("prompts") or {}, classifier.checkpoint)
    transform = classifier.transform()
    model = classifier.model
    text_encoder = text_encoder or model

    def classify(path: str) -> int:
        image = classifier.prepare_images(transform(cdata.load_image(image_root / path)).unsqueeze(0))
        with classifier.autocast():
            text = build_class_embeddings(text_encoder, classifier.class_names, prompt_set,
                                          class_ids=classifier.class_ids)
            features = model.encode_image(image, normalize=True)
        return int((classifier.scale * features.float() @ text.float().T).argmax())

    load_before = load_average()
    with torch_threads(threads), torch.inference_mode():
        classify(paths[0])  # warm-up
        start = time.perf_counter()
        for path in paths:
            classify(path)
        seconds = time.perf_counter() - start
    return {"images": len(paths), "images_per_s": len(paths) / seconds, "threads": threads,
            "load_average_1min": [load_before, load_average()]}
