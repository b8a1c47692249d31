"""Inference measurements: test.py in a subprocess (images/s and peak resident memory on two
row counts), the model-only ceiling on random pixels, their back-to-back pairs, and the
per-image loop on the same checkpoint and frames."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.dataset import BenchData, write_inference_csv
from benchmarks.machine import REPO_ROOT, load_average, subprocess_env, torch_threads
from benchmarks.per_image_loop import loop_text_encoders, measure_per_image_loop
from benchmarks.settings import BenchSettings
from clipmg.errors import DataError

TEST_PY = REPO_ROOT / "test.py"

# Runs test.py in this interpreter and reports, in KiB, the peak RSS of the test.py process and
# of its largest finished child (an image decoding worker, or a helper some import runs; a
# forked child's RSS also counts the pages it shares with the main process). The main figure is VmHWM where Linux has it:
# ru_maxrss keeps the high-water mark of the process image before exec, here a fork of the
# (large) bench process.
PEAK_RSS_SHIM = """\
import json, re, resource, runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
try:
    with open("/proc/self/status") as status:
        own = int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read()).group(1))
except (OSError, AttributeError):
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
print("BENCH_PEAK_RSS " + json.dumps({"self_kib": own, "children_kib": children}), file=sys.stderr, flush=True)
sys.exit(code)
"""

TEST_PY_SPEED = re.compile(r"(\d+) images in [\d.]+ s: ([\d.]+) images/s \(batch (\d+), decoding workers (\d+)")


def run_test_py(checkpoint: Path, csv: Path, image_root: Path, batch_size: int, device: str,
                output: Path, workers: int | None = None) -> dict:
    """test.py on `csv` in a subprocess (its own default `--workers` unless given): its
    images/s and its peak resident memory."""
    if not TEST_PY.is_file():
        raise DataError(f"bench: {TEST_PY} not found; the inference benchmark runs the repository's test.py")
    command = [sys.executable, "-c", PEAK_RSS_SHIM, str(TEST_PY), "-q", "--imagepathscsv", str(csv),
               "--columnname", "Path", "--image-root", str(image_root), "--checkpoint", str(checkpoint),
               "--batch-size", str(batch_size), "--device", device, "--output", str(output)]
    if workers is not None:
        command += ["--workers", str(workers)]
    load_before = load_average()
    done = subprocess.run(command, capture_output=True, text=True, env=subprocess_env())
    speed = TEST_PY_SPEED.search(done.stdout)
    peak = re.search(r"BENCH_PEAK_RSS (\{.*\})", done.stderr)
    if done.returncode != 0 or speed is None or peak is None:
        raise DataError(f"bench: test.py failed on {csv} (exit {done.returncode}):\n"
                        f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    usage = json.loads(peak.group(1))
    return {"rows": int(speed.group(1)), "images_per_s": float(speed.group(2)), "batch_size": int(speed.group(3)),
            "workers": int(speed.group(4)), "peak_rss_mib": round(usage["self_kib"] / 1024, 1),
            "peak_rss_children_mib": round(usage["children_kib"] / 1024, 1),
            "load_average_1min": [load_before, load_average()]}


def measure_model_only(classifier, batch_size: int, batches: int, thread_counts: Sequence[int],
                       repeats: int = 1) -> dict:
    """images/s of normalisation, the image tower and class scoring alone on random pixels
    already on the device, at each thread count; the best is the ceiling for the data pipeline."""
    size = classifier.preprocess["image_size"]
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    # uint8 pixels, as test.py's loader gives them: `logits` normalises them on the device.
    images = torch.randint(0, 256, (batch_size, 3, height, width), dtype=torch.uint8, device=classifier.device)
    by_threads, all_rates = {}, {}
    load_before = load_average()
    for threads in sorted(set(thread_counts)):
        with torch_threads(threads):
            classifier.logits(images)  # warm-up
            rates = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(batches):
                    classifier.logits(images)
                rates.append(batches * batch_size / (time.perf_counter() - start))
            by_threads[str(threads)] = max(rates)
            all_rates[str(threads)] = rates
    best = max(by_threads, key=by_threads.get)
    return {"images_per_s": by_threads[best], "best_threads": int(best), "images_per_s_by_threads": by_threads,
            "repeats": all_rates,
            "batch_size": batch_size, "images": batches * batch_size,
            "load_average_1min": [load_before, load_average()]}


def test_py_model_threads(workers: int, threads: int, device: torch.device) -> int:
    """The threads test.py's model gets beside its decoding workers (threads_beside_workers)."""
    if device.type != "cpu" or workers == 0:
        return threads
    return max(1, min(threads, (os.cpu_count() or 1) - workers))


def measure_paired_efficiency(classifier, checkpoint: Path, csv: Path, data: BenchData, settings: BenchSettings,
                              threads: int, device: torch.device, work: Path) -> dict:
    """test.py end to end against model-only, measured back to back `settings.repeats` times:
    each test.py run on `csv` is followed at once by model-only (at `threads`, on as many
    images), and the median of the per-pair ratios is the verdict. On a VM whose speed drifts
    from minute to minute, a ratio of two bests taken minutes apart would measure the drift."""
    pairs = []
    for repeat in range(settings.repeats):
        run = run_test_py(checkpoint, csv, data.image_root, settings.batch_size, str(device),
                          work / f"predictions_pair_{repeat}.csv")
        batches = max(1, math.ceil(run["rows"] / settings.batch_size))
        model_only = measure_model_only(classifier, settings.batch_size, batches, [threads])
        pairs.append({"test_py": run, "model_only_images_per_s": model_only["images_per_s"],
                      "model_only_load_average_1min": model_only["load_average_1min"],
                      "ratio": run["images_per_s"] / model_only["images_per_s"]})
    return {"pairs": pairs, "threads": threads, "median_ratio": float(np.median([p["ratio"] for p in pairs]))}


def measure_inference(checkpoint: Path, data: BenchData, settings: BenchSettings, parallel: dict,
                      device: torch.device, work: Path) -> dict:
    from clipmg.inference import Classifier

    runs = {}
    for rows in settings.memory_rows:
        csv = write_inference_csv(data, rows, work / f"frames_{rows}.csv")
        runs[rows] = run_test_py(checkpoint, csv, data.image_root, settings.batch_size, str(device),
                                 work / f"predictions_{rows}.csv")
    small_csv = work / f"frames_{settings.memory_rows[0]}.csv"
    classifier = Classifier.from_checkpoint(checkpoint, device=str(device))
    model_threads = test_py_model_threads(runs[settings.memory_rows[0]]["workers"], parallel["threads"], device)
    model_only = measure_model_only(classifier, settings.batch_size, settings.model_only_batches,
                                    [1, model_threads, parallel["threads"]], repeats=settings.repeats)
    paired = measure_paired_efficiency(classifier, checkpoint, small_csv, data, settings,
                                       model_only["best_threads"], device, work)
    # The fastest of the paired test.py runs is test.py's figure: on a shared machine the
    # slower ones measure the neighbours.
    throughput_runs = [pair["test_py"] for pair in paired["pairs"]]
    throughput_run = max(throughput_runs, key=lambda run: run["images_per_s"])
    # The other way of decoding (in the main process, or in one worker): which one test.py
    # should default to on this machine.
    other = run_test_py(checkpoint, small_csv, data.image_root, settings.batch_size, str(device),
                        work / "predictions_other_workers.csv", workers=0 if throughput_run["workers"] else 1)
    loop_paths = list(np.resize(data.frames["path"].to_numpy(), settings.loop_images))
    loops = {name: measure_per_image_loop(classifier, loop_paths, data.image_root, parallel["threads"], encoder)
             for name, encoder in loop_text_encoders(classifier.model).items()}
    loop = loops["longest"]
    small, large = (runs[r] for r in settings.memory_rows)
    return {
        "test_py": throughput_run,
        "test_py_images_per_s_runs": [run["images_per_s"] for run in throughput_runs],
        "test_py_other_workers": other,
        "per_image_loop": loop,
        "per_image_loops": loops,
        "model_only": model_only,
        "paired": paired,
        "memory": {"runs": {str(r): runs[r] for r in settings.memory_rows},
                   "growth": large["peak_rss_mib"] / small["peak_rss_mib"]},
        "loop_speedup": throughput_run["images_per_s"] / loop["images_per_s"],
        "loop_speedups": {name: throughput_run["images_per_s"] / run["images_per_s"] for name, run in loops.items()},
        "pipeline_efficiency": paired["median_ratio"],
    }
