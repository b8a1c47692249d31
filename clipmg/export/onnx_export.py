"""`clipmg export --format onnx`: a checkpoint as one ONNX graph from images to class logits.

The graph is what `Classifier.logits` computes: the normalisation of uint8 pixels (or, with
`input="float"`, images already normalised), the image tower, and the scoring against the
checkpoint's class embeddings (encoded once from its prompts) at its logit scale, or its linear
head. The text tower is not in the graph: the class embeddings are constants. The batch size is
dynamic. Before the file is put in place it is run with onnxruntime against PyTorch on the same
images; a graph that does not reproduce the checkpoint is not written.

It is exported with torch.export (`torch.onnx.export(..., dynamo=True)`): the TorchScript
exporter is deprecated since torch 2.9 and both gave the same logits here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clipmg import data as cdata
from clipmg.errors import ModelError
from clipmg.inference import Classifier
from clipmg.utils import atomic_path, logger

INPUTS = ("uint8", "float")
VERIFY_BATCHES = (1, 37)
DEFAULT_TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class LogitsGraph(nn.Module):
    """images (B, 3, H, W) -> (B, C) float32 logits, as `Classifier.logits` computes them."""

    def __init__(self, classifier: Classifier, input: str = "uint8"):
        super().__init__()
        self.model = classifier.model
        self.input = input
        self.mean = [float(v) for v in classifier.preprocess.get("mean", cdata.OPENAI_CLIP_MEAN)]
        self.std = [float(v) for v in classifier.preprocess.get("std", cdata.OPENAI_CLIP_STD)]
        table = classifier.class_embeddings
        self.register_buffer("class_embeddings", None if table is None else table.detach().float().cpu().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = cdata.normalize_images(images, self.mean, self.std)  # float input passes through
        return self.model.logits_from_features(self.model.scoring_features(images), self.class_embeddings)


def check_exportable(classifier: Classifier) -> None:
    """Models whose inputs are computed per frame at run time (MediaPipe keypoints, hand boxes)
    cannot be one graph from images."""
    extra = tuple(classifier.model.extra_inputs)
    if extra:
        name = classifier.model.model_config.get("name") or type(classifier.model).__name__
        raise ModelError(
            f"{name} cannot be exported to ONNX: besides the image it takes {', '.join(extra)} per frame, "
            "computed by MediaPipe at run time (hand crops, pose keypoints), which an ONNX graph cannot hold. "
            "Export a model trained without --hand-crops / --pose-fusion, or run it with test.py."
        )


def image_shape(preprocess: dict) -> tuple[int, int]:
    size = preprocess["image_size"]
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def example_images(batch: int, shape: tuple[int, int], input: str, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if input == "uint8":
        return torch.randint(0, 256, (batch, 3, *shape), dtype=torch.uint8, generator=generator)
    return torch.randn((batch, 3, *shape), generator=generator)


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, *, input: str = "uint8",
                labels=None, prompts=None, opset: int | None = None, verify_batches=VERIFY_BATCHES,
                tolerance: float = DEFAULT_TOLERANCE, classifier: Classifier | None = None) -> dict:
    """Write `checkpoint` (or a CPU `classifier`) as an ONNX graph to `out` (see the module's doc).
    Returns a summary: out, input, input_shape, classes, max_abs_diff per verified batch size,
    tolerance, bytes, seconds."""
    import time

    if input not in INPUTS:
        raise ModelError(f"--input {input!r}: choose one of {', '.join(INPUTS)}")
    start = time.perf_counter()
    classifier = classifier or Classifier.from_checkpoint(checkpoint, device="cpu", labels=labels, prompts=prompts)
    check_exportable(classifier)
    if classifier.device.type != "cpu":
        raise ModelError("export a classifier on the CPU (its graph is traced and checked there)")
    graph = LogitsGraph(classifier, input).eval()
    shape = image_shape(classifier.preprocess)
    out = Path(out)
    with atomic_path(out) as partial:
        _export(graph, example_images(2, shape, input), partial, opset)
        _add_metadata(partial, classifier, input, shape)
        diffs = verify_onnx(partial, classifier, input=input, batch_sizes=verify_batches)
        worst = max(diffs.values(), default=0.0)
        if not worst <= tolerance:
            raise ModelError(f"the ONNX graph of {classifier.description} differs from PyTorch by up to {worst:.3g} "
                             f"in the logits (tolerance {tolerance:g}); {out} was not written")
    logger.info("wrote %s (max |ONNX - PyTorch| %.2g over batch sizes %s)", out, worst, list(diffs))
    return {"out": str(out), "input": input, "input_shape": ["batch", 3, *shape],
            "classes": len(classifier.class_ids), "checkpoint": classifier.description,
            "max_abs_diff": diffs, "tolerance": tolerance, "bytes": out.stat().st_size,
            "seconds": time.perf_counter() - start}


def _export(graph: LogitsGraph, example: torch.Tensor, path: Path, opset: int | None) -> None:
    options = {"opset_version": opset} if opset else {}
    try:
        with torch.no_grad(), _exporter_quiet():
            torch.onnx.export(graph, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              external_data=False, verbose=False, **options)
    except ImportError as error:
        raise ModelError(f"ONNX export needs the export extra (pip install 'clipmg[export]'): {error}") from error
    except Exception as error:  # torch.export raises many kinds for unsupported operations
        raise ModelError(f"torch.onnx.export could not export {type(graph.model).__name__}: {error}") from error


@contextlib.contextmanager
def _exporter_quiet():
    """The exporter prints its progress and onnxscript warns about constant folding it skips:
    both go to clipmg's debug log instead (the library does not print)."""
    optimizer_log = logging.getLogger("onnxscript")
    level = optimizer_log.level
    optimizer_log.setLevel(logging.ERROR)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        optimizer_log.setLevel(level)
        logger.debug("torch.onnx.export: %s", printed.getvalue().strip())


def _add_metadata(path: Path, classifier: Classifier, input: str, shape: tuple[int, int]) -> None:
    """What a deployment needs besides the graph: the classes and the input it expects."""
    import onnx

    model = onnx.load(str(path))
    preprocess = {key: classifier.preprocess.get(key) for key in ("image_size", "mean", "std", "interpolation")}
    props = {"clipmg_class_ids": json.dumps(classifier.class_ids),
             "clipmg_class_names": json.dumps(classifier.class_names),
             "clipmg_input": ("uint8 RGB pixels 0-255" if input == "uint8" else "float32 normalised with mean/std")
             + f", shape (batch, 3, {shape[0]}, {shape[1]}), resized and centre-cropped as preprocess says",
             "clipmg_preprocess": json.dumps(preprocess),
             "clipmg_model": str(classifier.model.model_config.get("name", "")),
             "clipmg_checkpoint": classifier.description}
    onnx.helper.set_model_props(model, props)
    model.doc_string = "clipmg: images -> class logits (softmax gives class probabilities)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def verify_onnx(path: str | os.PathLike, classifier: Classifier, *, input: str = "uint8",
                batch_sizes=VERIFY_BATCHES, seed: int = 0) -> dict[int, float]:
    """Max |ONNX - PyTorch| of the logits, per batch size, on the same random images."""
    session = onnx_session(path)
    shape = image_shape(classifier.preprocess)
    diffs = {}
    for batch in batch_sizes:
        images = example_images(batch, shape, input, seed=seed + batch)
        expected = classifier.logits(images).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
        if got.shape != expected.shape:
            raise ModelError(f"the ONNX graph gives logits of shape {got.shape} for {batch} images, not {expected.shape}")
        diffs[batch] = float(np.abs(got - expected).max())
    return diffs


def onnx_session(path: str | os.PathLike):
    try:
        import onnxruntime
    except ImportError as error:
        raise ModelError("checking the ONNX graph needs onnxruntime (pip install 'clipmg[export]')") from error
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
