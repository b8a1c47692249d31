"""The benchmark run: every measurement for every model, the targets, the results on disk.

`run_benchmark(BenchSettings(...))` generates a demo dataset, then for each model config
measures, with the same batch size, image size, precision, data workers and threads:

1. training samples/s of clipmg's Trainer (captions, batch contrast: open_clip's pairing)
   against `python -m open_clip_train.main` on a CSV of the same frames and captions, each
   for one epoch after a warm-up;
2. test.py's images/s against a per-image loop that re-encodes every class prompt for
   every image (batch size 1), on the same checkpoint and frames: the target's loop pads
   the prompts only to the longest one, the cheapest a loop can do (Hugging Face's
   `padding=True`; clipmg's `encode_text` gives the same embeddings); a second loop on
   open_clip's own `encode_text`, which pads every prompt to the context length (77
   tokens), is reported beside it;
3. the model-only forward throughput on random pixels (the ceiling of the data pipeline),
   measured right after each of `repeats` test.py runs: the median of the per-pair ratios
   is the end-to-end efficiency;
4. the peak resident memory of test.py on two row counts (it must not grow with the rows).

It writes `benchmark.json` (every figure, the machine, the settings and each target with
whether it was met) and `benchmark.md` (the table docs/benchmarks.md embeds). Run it with
`python benchmarks/bench.py --out docs/bench/<name>`; see docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.dataset import BenchData, prepare_data
from benchmarks.inference import measure_inference
from benchmarks.machine import load_average, machine_info
from benchmarks.model_configs import has_clip_sized_text, open_clip_name, text_tower_size
from benchmarks.report import write_results
from benchmarks.settings import BenchSettings, default_precision, resolve_parallelism, settings_dict
from benchmarks.targets import evaluate_targets
from benchmarks.training import measure_clipmg_training, measure_open_clip_training
from clipmg.utils import logger, resolve_device


def benchmark_model(model: str, data: BenchData, settings: BenchSettings, parallel: dict, device: torch.device,
                    work: Path) -> dict:
    precision = default_precision(device)
    logger.info("bench %s: clipmg training", model)
    clipmg_train = measure_clipmg_training(model, data, settings, parallel, precision["clipmg"],
                                           work / f"clipmg_run_{open_clip_name(model)}")
    gc.collect()  # the Trainer's persistent data workers end with it, before the next process starts
    logger.info("bench %s: open_clip_train", model)
    open_clip_train = measure_open_clip_training(model, data, settings, parallel, precision["open_clip_train"],
                                                 device, clipmg_train["grad_clip"], work)
    logger.info("bench %s: inference", model)
    inference = measure_inference(Path(clipmg_train["checkpoint"]), data, settings, parallel, device, work)
    result = {"model": model, "text_tower": text_tower_size(model), "clip_sized_text": has_clip_sized_text(model),
              "training": {"clipmg": clipmg_train, "open_clip_train": open_clip_train,
                           "speedup": clipmg_train["samples_per_s"] / open_clip_train["samples_per_s"]},
              "inference": inference}
    result["targets"] = evaluate_targets(result, result["clip_sized_text"])
    return result


def run_benchmark(settings: BenchSettings) -> dict:
    """Run every measurement for every model; write benchmark.json and benchmark.md into
    `settings.out` (when set) and return the results."""
    settings.validate()
    device = resolve_device(settings.device)
    parallel = resolve_parallelism(settings, device)
    started = time.perf_counter()
    work = Path(settings.work_dir) if settings.work_dir else Path(tempfile.mkdtemp(prefix="clipmg_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = {"machine": machine_info(device), "settings": settings_dict(settings, parallel, device)}
        logger.info("bench: generating %d frames of %d px in %s", settings.frames, settings.size, work)
        data = prepare_data(settings, work / "data")
        results["data"] = data.info
        results["models"] = {model: benchmark_model(model, data, settings, parallel, device, work)
                             for model in settings.models}
    finally:
        if not settings.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_1min_at_end"] = load_average()
    results["seconds"] = round(time.perf_counter() - started, 1)
    if settings.out is not None:
        write_results(results, Path(settings.out))
    return results
