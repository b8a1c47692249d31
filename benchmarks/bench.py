"""Throughput and memory benchmark: clipmg against open_clip_train and a per-image loop.

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
`python scripts/bench.py --out docs/bench/<name>`; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.errors import DataError, TrainingError
from clipmg.synthetic import make_demo_data
from clipmg.utils import keep_freed_memory_for_reuse, logger

CLIP_SIZED_TEXT = {"width": 512, "layers": 12}  # a text tower at least this big is "CLIP-sized"
DEFAULT_MODELS = ("openclip:clipmg-small", "openclip:clipmg-small-cliptext")
FRAMES_PER_CLIP = 4
IMIGUE_CLASSES = 32  # the per-image loop re-encodes one prompt set per class: its cost grows with them
MIB = 1024 * 1024
RESULTS_JSON = "benchmark.json"
RESULTS_MD = "benchmark.md"
DOC_BEGIN = "<!-- bench:begin -->"
DOC_END = "<!-- bench:end -->"
REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_PY = REPO_ROOT / "test.py"

# Run in a fresh interpreter: clipmg's configs become known to open_clip, the thread count is
# the one clipmg trains with, then open_clip_train's own entry point runs unchanged.
OPEN_CLIP_TRAIN_SHIM = """\
import sys
import open_clip
import torch
torch.set_num_threads(int(sys.argv[1]))
open_clip.add_model_config(sys.argv[2])
from open_clip_train.main import main
sys.exit(main(sys.argv[3:]))
"""

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

OPEN_CLIP_STEP = re.compile(r"Train Epoch: \d+ \[\s*\d+/\d+ .*?Batch \(t\): [\d.]+, ([\d.eE+-]+)/s")
TEST_PY_SPEED = re.compile(r"(\d+) images in [\d.]+ s: ([\d.]+) images/s \(batch (\d+), decoding workers (\d+)")


@dataclass
class BenchSettings:
    out: Path | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    frames: int = 2000
    classes: int = IMIGUE_CLASSES
    size: int = 112  # side of the generated frames
    image_size: int | None = None  # model input; None: each model config's own
    batch_size: int = 64
    workers: int | None = None  # data workers of both trainers; None: 1 on the CPU, min(4, cores) on a GPU
    threads: int | None = None  # torch threads; None: torch's default (the cores)
    device: str = "auto"
    warmup_steps: int = 3
    max_train_steps: int | None = None  # None: one full epoch
    loop_images: int = 32
    model_only_batches: int = 10
    repeats: int = 3  # test.py / model-only pairs (median ratio counts) and model-only sweeps (fastest counts)
    memory_rows: tuple[int, int] = (2000, 20000)
    seed: int = 0
    work_dir: Path | None = None
    note: str = ""  # a line put above the table (e.g. what else ran on the machine)
    command: str = ""  # the command line that ran it, recorded with the results

    def validate(self) -> BenchSettings:
        for name in ("frames", "size", "batch_size", "loop_images", "model_only_batches", "repeats"):
            if getattr(self, name) < 1:
                raise DataError(f"bench: --{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.frames < FRAMES_PER_CLIP * 8:
            raise DataError(f"bench: --frames must be at least {FRAMES_PER_CLIP * 8} (2 clips for each of 4 classes)")
        if not 4 <= self.classes <= IMIGUE_CLASSES:
            raise DataError(f"bench: --classes must be 4..{IMIGUE_CLASSES}, got {self.classes}")
        if self.warmup_steps < 0:
            raise DataError(f"bench: --warmup-steps must be 0 or more, got {self.warmup_steps}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise DataError(f"bench: --max-train-steps must be at least 1, got {self.max_train_steps}")
        if len(self.memory_rows) != 2 or min(self.memory_rows) < 1 or self.memory_rows[0] >= self.memory_rows[1]:
            raise DataError(f"bench: --memory-rows needs two increasing row counts, got {self.memory_rows}")
        if self.workers is not None and self.workers < 0:
            raise DataError(f"bench: --workers must be 0 or more, got {self.workers}")
        for name in ("threads", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DataError(f"bench: --{name.replace('_', '-')} must be at least 1, got {value}")
        for model in self.models:
            open_clip_name(model)
        return self


@dataclass
class BenchData:
    """The generated frames and the files both trainers and test.py read."""

    root: Path
    metadata: Path
    labels: Path
    image_root: Path
    split_csv: Path
    frames: pd.DataFrame  # all frames, standard columns
    train: pd.DataFrame  # the training side of the clip-grouped split
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- helpers
def open_clip_name(model: str) -> str:
    if not model.startswith("openclip:"):
        raise DataError(f"bench: model {model!r} is not an openclip:<model>; open_clip_train can only "
                        "train open_clip models, so the comparison needs one")
    return model.split(":", 1)[1]


def text_tower_size(model: str) -> dict:
    import open_clip

    from clipmg.models.openclip import register_model_configs

    register_model_configs()
    text = (open_clip.get_model_config(open_clip_name(model)) or {}).get("text_cfg", {})
    return {"width": int(text.get("width", 0)), "layers": int(text.get("layers", 0)),
            "context_length": int(text.get("context_length", 0))}


def has_clip_sized_text(model: str) -> bool:
    size = text_tower_size(model)
    return all(size[key] >= minimum for key, minimum in CLIP_SIZED_TEXT.items())


@contextlib.contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    import open_clip

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB / 1024
    except (ValueError, OSError, AttributeError):
        memory = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "device": str(device),
            "memory_gib": round(memory, 1) if memory else None, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_1min_at_start": load_average()}


def resolve_parallelism(settings: BenchSettings, device: torch.device) -> dict:
    """Data workers and torch threads of both trainers: by default one worker on the CPU (both
    decode and augment on the fly, so loading overlaps the step), min(4, cores) beside a GPU;
    on the CPU each worker gets a core and the model the rest (clipmg.utils.threads_beside_workers)."""
    cores = os.cpu_count() or 1
    threads = settings.threads or torch.get_num_threads()
    if settings.workers is not None:
        workers = settings.workers
    else:
        workers = min(4, cores) if device.type == "cuda" else min(1, cores - 1)
    train_threads = threads if device.type != "cpu" or workers == 0 else max(1, min(threads, cores - workers))
    return {"workers": workers, "threads": threads, "train_threads": train_threads}


def default_precision(device: torch.device) -> dict:
    """fp32 on the CPU (bf16 autocast is ~20x slower there); bf16 autocast on a GPU."""
    if device.type == "cuda":
        return {"clipmg": "bf16", "open_clip_train": "amp_bf16"}
    return {"clipmg": "fp32", "open_clip_train": "fp32"}


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


# ------------------------------------------------------------------------------- data
def demo_layout(frames: int, classes: int = IMIGUE_CLASSES) -> dict:
    """Clips of FRAMES_PER_CLIP frames; `classes` of them, fewer when there are too few clips
    for 4 clips a class (at least 4 classes)."""
    clips = max(8, frames // FRAMES_PER_CLIP)
    return {"clips": clips, "frames_per_clip": FRAMES_PER_CLIP, "classes": min(classes, max(4, clips // 4))}


def prepare_data(settings: BenchSettings, root: Path) -> BenchData:
    layout = demo_layout(settings.frames, settings.classes)
    info = make_demo_data(root, size=settings.size, seed=settings.seed, **layout)
    labels = cdata.load_labels(info["labels"])
    frames = cdata.read_metadata(info["metadata"], labels=labels)
    split = cdata.split_dataset(frames, by="clip", seed=settings.seed)
    split_csv, _ = cdata.write_split(split, frames, root / "split.csv")
    return BenchData(root=root, metadata=Path(info["metadata"]), labels=Path(info["labels"]),
                     image_root=Path(info["image_root"]), split_csv=split_csv, frames=frames,
                     train=frames.iloc[split.train_index].reset_index(drop=True),
                     info={"frames": info["frames"], "classes": info["classes"], "clips": info["clips"],
                           "frame_size": settings.size, "train_frames": len(split.train_index),
                           "val_frames": len(split.val_index), "seconds_to_generate": info["seconds"]})


def write_open_clip_csv(data: BenchData, rows: int, path: Path) -> Path:
    """open_clip_train's CSV: absolute image paths and the captions clipmg trains on."""
    train = data.train.iloc[:rows]
    table = pd.DataFrame({"filepath": [str((data.image_root / p).resolve()) for p in train["path"]],
                          "title": train["caption"].astype(str).str.strip()})
    table.to_csv(path, index=False)
    return path


def write_inference_csv(data: BenchData, rows: int, path: Path) -> Path:
    """`rows` frames for test.py, the dataset's frames repeated as often as needed."""
    order = np.resize(np.arange(len(data.frames)), rows)
    frames = data.frames.iloc[order]
    table = pd.DataFrame({"Path": frames["path"].to_numpy(), "Class": frames["class_id"].to_numpy(),
                          "Video ID": frames["video_id"].to_numpy(), "Caption": frames["caption"].to_numpy()})
    table.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- training
def train_config(model: str, data: BenchData, settings: BenchSettings, parallel: dict, precision: str,
                 output: Path):
    from clipmg.training import TrainConfig

    return TrainConfig(metadata=str(data.metadata), labels=str(data.labels), split=str(data.split_csv),
                       model=model, image_size=settings.image_size, text_source="caption", contrast="batch",
                       batch_size=settings.batch_size, workers=parallel["workers"], precision=precision,
                       epochs=2, device=settings.device, output=str(output), tensorboard=False,
                       seed=settings.seed).validate()


def measure_clipmg_training(model: str, data: BenchData, settings: BenchSettings, parallel: dict,
                            precision: str, output: Path) -> dict:
    """samples/s of one epoch of clipmg's Trainer after a warm-up of `warmup_steps` steps;
    leaves a checkpoint in `output/bench` for the inference measurements."""
    from clipmg.training import Trainer
    from clipmg.training import distributed as ddp

    cfg = train_config(model, data, settings, parallel, precision, output)
    trainer = Trainer(cfg)
    load_before = load_average()
    try:
        with torch_threads(parallel["train_threads"]):
            trainer.setup()
            if settings.warmup_steps:
                cfg.max_steps_per_epoch = settings.warmup_steps
                trainer.train_epoch(0)
                trainer.state["step_in_epoch"] = 0
            cfg.max_steps_per_epoch = settings.max_train_steps
            stats = trainer.train_epoch(1)
        trainer.save("bench", with_state=False)
    finally:
        ddp.cleanup(trainer.env)
    steps = math.ceil(len(trainer.train_dataset) / cfg.batch_size)
    if settings.max_train_steps:
        steps = min(steps, settings.max_train_steps)
    return {"samples_per_s": stats["samples_per_s"], "steps": steps,
            "samples": min(len(trainer.train_dataset), steps * cfg.batch_size),
            "warmup_steps": settings.warmup_steps, "text_source": cfg.text_source, "contrast": cfg.contrast,
            "precision": precision, "workers": cfg.workers, "threads": parallel["train_threads"],
            "grad_clip": cfg.grad_clip, "load_average_1min": [load_before, load_average()],
            "checkpoint": str(output / "bench")}


def open_clip_train_command(model: str, train_csv: Path, settings: BenchSettings, parallel: dict,
                            precision: str, device: torch.device, grad_clip: float | None) -> list[str]:
    from clipmg.models.openclip import MODEL_CONFIG_DIR

    command = [sys.executable, "-c", OPEN_CLIP_TRAIN_SHIM, str(parallel["train_threads"]), str(MODEL_CONFIG_DIR),
               "--train-data", str(train_csv), "--dataset-type", "csv", "--csv-separator", ",",
               "--csv-img-key", "filepath", "--csv-caption-key", "title", "--model", open_clip_name(model),
               "--precision", precision, "--device", device.type, "--batch-size", str(settings.batch_size),
               "--workers", str(parallel["workers"]), "--epochs", "1", "--log-every-n-steps", "1",
               "--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0",
               "--logs", "none", "--name", f"bench-{open_clip_name(model)}", "--seed", str(settings.seed)]
    if grad_clip:
        command += ["--grad-clip-norm", str(grad_clip)]
    if settings.image_size:
        command += ["--force-image-size", str(settings.image_size)]
    return command


def parse_open_clip_steps(log: str) -> list[float]:
    """samples/s of each logged step (one log line per step with --log-every-n-steps 1)."""
    return [float(match.group(1)) for match in OPEN_CLIP_STEP.finditer(log)]


def samples_per_s_after_warmup(step_rates: Sequence[float], batch_size: int, warmup_steps: int) -> float:
    """Samples over seconds of the steps after the warm-up (each step's seconds = batch / rate)."""
    measured = step_rates[warmup_steps:]
    return len(measured) * batch_size / sum(batch_size / rate for rate in measured)


def measure_open_clip_training(model: str, data: BenchData, settings: BenchSettings, parallel: dict,
                               precision: str, device: torch.device, grad_clip: float | None,
                               work: Path) -> dict:
    """samples/s of `python -m open_clip_train.main` for one epoch, its first `warmup_steps`
    steps discarded."""
    steps = math.floor(len(data.train) / settings.batch_size)  # open_clip_train drops the last partial batch
    if settings.max_train_steps:
        steps = min(steps, settings.max_train_steps + settings.warmup_steps)
    if steps <= settings.warmup_steps:
        raise DataError(f"bench: {len(data.train)} training frames make {steps} batches of "
                        f"{settings.batch_size}, not more than the {settings.warmup_steps} warm-up steps; "
                        "use more --frames or a smaller --batch-size")
    train_csv = write_open_clip_csv(data, steps * settings.batch_size, work / f"open_clip_train_{open_clip_name(model)}.csv")
    command = open_clip_train_command(model, train_csv, settings, parallel, precision, device, grad_clip)
    run_dir = work / "open_clip_train_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log_path = work / f"open_clip_train_{open_clip_name(model)}.log"
    load_before = load_average()
    with open(log_path, "w", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    rates = parse_open_clip_steps(log_text)
    if done.returncode != 0 or len(rates) <= settings.warmup_steps:
        raise TrainingError(f"open_clip_train failed (exit {done.returncode}, {len(rates)} steps logged); "
                            f"its log {log_path} ends with:\n{log_text[-3000:]}")
    return {"samples_per_s": samples_per_s_after_warmup(rates, settings.batch_size, settings.warmup_steps),
            "steps": len(rates) - settings.warmup_steps, "samples": (len(rates) - settings.warmup_steps) * settings.batch_size,
            "warmup_steps": settings.warmup_steps, "precision": precision, "workers": parallel["workers"],
            "threads": parallel["train_threads"], "grad_clip": grad_clip,
            "load_average_1min": [load_before, load_average()], "log": str(log_path)}


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


# -------------------------------------------------------------------------- inference
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
    by 15-20% between minutes, a ratio of two bests taken minutes apart would measure the drift."""
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


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    key: str
    what: str
    at_least: float | None = None
    at_most: float | None = None
    clip_text_only: bool = False  # stated for the CLIP-sized text tower only

    def met(self, value: float) -> bool:
        if self.at_least is not None:
            return value >= self.at_least
        return value <= self.at_most

    def describe(self) -> str:
        return f">= {self.at_least:g}" if self.at_least is not None else f"<= {self.at_most:g}"


TARGETS = (
    Target("training_speedup", "clipmg train samples/s / open_clip_train samples/s", at_least=1.5,
           clip_text_only=True),
    Target("loop_speedup", "test.py images/s / per-image loop images/s", at_least=30.0, clip_text_only=True),
    Target("pipeline_efficiency", "test.py images/s / model-only images/s", at_least=0.8),
    Target("memory_growth", "test.py process peak RSS at the larger row count / at the smaller",
           at_most=1.10),
)


def evaluate_targets(result: dict, clip_text: bool) -> list[dict]:
    values = {"training_speedup": result["training"]["speedup"],
              "loop_speedup": result["inference"]["loop_speedup"],
              "pipeline_efficiency": result["inference"]["pipeline_efficiency"],
              "memory_growth": result["inference"]["memory"]["growth"]}
    return [{"key": t.key, "what": t.what, "target": t.describe(), "value": values[t.key],
             "met": t.met(values[t.key]), "required": clip_text or not t.clip_text_only} for t in TARGETS]


# ------------------------------------------------------------------------------- main
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
    from clipmg.utils import resolve_device

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


def settings_dict(settings: BenchSettings, parallel: dict, device: torch.device) -> dict:
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()}
    values["memory_rows"] = list(settings.memory_rows)
    values["models"] = list(settings.models)
    return {**values, **parallel, "precision": default_precision(device)}


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / RESULTS_JSON, out / RESULTS_MD
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path


# --------------------------------------------------------------------------- markdown
def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _target_cell(value: float, target: dict, unit: str = "x") -> str:
    verdict = "met" if target["met"] else "**missed**"
    required = "" if target["required"] else ", not required for this model"
    return f"{value:.2f}{unit} (target {target['target']}{unit}: {verdict}{required})"


def _loop_cell(result: dict, encoding: str) -> str:
    run = result["inference"].get("per_image_loops", {}).get(encoding)
    return _number(run["images_per_s"]) if run else "n/a"


def _speedup_cell(result: dict, encoding: str) -> str:
    value = result["inference"].get("loop_speedups", {}).get(encoding)
    return f"{value:.2f}x" if value else "n/a"


def render_markdown(results: dict) -> str:
    models = results["models"]
    names = [m.split(":", 1)[1] for m in models]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell) -> None:
        rows.append((label, [cell(r, {t["key"]: t for t in r["targets"]}) for r in models.values()]))

    memory_rows = results["settings"]["memory_rows"]
    row("text tower (width x layers)", lambda r, t: f"{r['text_tower']['width']} x {r['text_tower']['layers']}")
    row("train samples/s: clipmg (captions, batch contrast)",
        lambda r, t: _number(r["training"]["clipmg"]["samples_per_s"]))
    row("train samples/s: open_clip_train", lambda r, t: _number(r["training"]["open_clip_train"]["samples_per_s"]))
    row("training speed-up", lambda r, t: _target_cell(r["training"]["speedup"], t["training_speedup"]))
    row("test.py images/s (its default decoding workers)",
        lambda r, t: f"{_number(r['inference']['test_py']['images_per_s'])} "
                     f"({r['inference']['test_py']['workers']} workers)")
    row("test.py images/s with the other --workers (0: decoding in the main process)",
        lambda r, t: f"{_number(r['inference']['test_py_other_workers']['images_per_s'])} "
                     f"({r['inference']['test_py_other_workers']['workers']} workers)")
    row("per-image loop images/s (prompts re-encoded, batch 1, padded to the longest prompt)",
        lambda r, t: _number(r["inference"]["per_image_loop"]["images_per_s"]))
    row("test.py speed-up over the loop", lambda r, t: _target_cell(r["inference"]["loop_speedup"], t["loop_speedup"]))
    row("the loop on stock open_clip (prompts padded to 77 tokens) images/s", lambda r, t: _loop_cell(r, "context"))
    row("test.py speed-up over the stock open_clip loop (not a target)", lambda r, t: _speedup_cell(r, "context"))
    row("model-only images/s (random tensors, best thread count)",
        lambda r, t: f"{_number(r['inference']['model_only']['images_per_s'])} "
                     f"({r['inference']['model_only']['best_threads']} threads)")
    row("test.py / model-only: median of back-to-back pairs (each pair's ratio)",
        lambda r, t: _target_cell(r["inference"]["pipeline_efficiency"], t["pipeline_efficiency"], unit="")
        + " (" + ", ".join(f"{p['ratio']:.2f}" for p in r["inference"]["paired"]["pairs"]) + ")")
    for rows_count in memory_rows:
        row(f"test.py peak RSS, {rows_count:,} rows: process / largest child (MiB)",
            lambda r, t, n=rows_count: "{:,.0f} / {:,.0f}".format(
                r["inference"]["memory"]["runs"][str(n)]["peak_rss_mib"],
                r["inference"]["memory"]["runs"][str(n)]["peak_rss_children_mib"]))
    row("memory growth", lambda r, t: _target_cell(r["inference"]["memory"]["growth"], t["memory_growth"]))

    machine, settings, data = results["machine"], results["settings"], results["data"]
    lines = [f"_{settings['note']}_", ""] if settings.get("note") else []
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, GPU {machine['gpu'] or 'none'} "
        f"(device {machine['device']}), torch {machine['torch']}, open_clip {machine['open_clip']}; "
        f"1-min load average {machine['load_average_1min_at_start']} at the start, "
        f"{machine.get('load_average_1min_at_end')} at the end.",
        f"Data: {data['frames']:,} demo frames of {data['frame_size']} px, {data['classes']} classes "
        f"({data['train_frames']:,} training frames); batch {settings['batch_size']}, "
        f"model input {settings['image_size'] or 'each config’s own'}, precision "
        f"{settings['precision']['clipmg']} (open_clip_train {settings['precision']['open_clip_train']}), "
        f"{settings['workers']} data workers and {settings['train_threads']} threads on both training sides, "
        f"{settings['warmup_steps']} warm-up steps; whole run {results['seconds']:,.0f} s.",
        "",
        "| measurement | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    lines.append("")
    return "\n".join(lines)


def update_doc(doc: Path, fragment: str) -> None:
    """Replace the text between the bench markers of `doc` with `fragment`."""
    text = doc.read_text(encoding="utf-8")
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise DataError(f"{doc}: no {DOC_BEGIN} ... {DOC_END} markers to put the table between")
    doc.write_text(text[:begin + len(DOC_BEGIN)] + "\n" + fragment + text[end:], encoding="utf-8")


# -------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(prog="scripts/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for benchmark.json and benchmark.md")
    parser.add_argument("--update-doc", type=Path, help="also put the table into this Markdown file "
                        f"(between {DOC_BEGIN} and {DOC_END})")
    parser.add_argument("--models", nargs="+", default=list(defaults.models))
    parser.add_argument("--frames", type=int, default=defaults.frames, help="demo frames to generate")
    parser.add_argument("--classes", type=int, default=defaults.classes,
                        help="demo classes (default: iMiGUE's 32; fewer when --frames is small)")
    parser.add_argument("--size", type=int, default=defaults.size, help="side of the generated frames (px)")
    parser.add_argument("--image-size", type=int, help="model input size (default: each config's own)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--workers", type=int, help="data workers of both trainers "
                        "(default: 1 on the CPU, min(4, cores) beside a GPU)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, the cores)")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--max-train-steps", type=int, help="measured training steps (default: one epoch)")
    parser.add_argument("--loop-images", type=int, default=defaults.loop_images,
                        help="images the per-image loop classifies")
    parser.add_argument("--model-only-batches", type=int, default=defaults.model_only_batches)
    parser.add_argument("--repeats", type=int, default=defaults.repeats,
                        help="back-to-back pairs of test.py and model-only runs (the median ratio counts; the fastest test.py "
                             "run is its images/s), and model-only runs per thread count (the fastest counts)")
    parser.add_argument("--memory-rows", type=int, nargs=2, default=list(defaults.memory_rows),
                        help="row counts of the two test.py runs (the first also gives its images/s)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--note", default="", help="a line to put above the table, e.g. how busy the machine was")
    parser.add_argument("--work-dir", type=Path, help="keep the generated data and logs here "
                        "(default: a temporary folder, removed afterwards)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    from clipmg.errors import ClipmgError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # the same allocator as test.py and `clipmg train` (their CLI sets it), for the model-only ceiling and training
    keep_freed_memory_for_reuse()
    settings = BenchSettings(out=args.out, models=tuple(args.models), frames=args.frames, classes=args.classes,
                             size=args.size,
                             image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
                             threads=args.threads, device=args.device, warmup_steps=args.warmup_steps,
                             max_train_steps=args.max_train_steps, loop_images=args.loop_images,
                             model_only_batches=args.model_only_batches,
                             repeats=args.repeats, memory_rows=tuple(args.memory_rows),
                             seed=args.seed, work_dir=args.work_dir, note=args.note,
                             command=shlex.join(["python", "scripts/bench.py", *argv]))
    try:
        results = run_benchmark(settings)
        fragment = render_markdown(results)
        if args.update_doc:
            update_doc(args.update_doc, fragment)
    except ClipmgError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(fragment)
    if args.out:
        print(f"wrote {args.out / RESULTS_JSON} and {args.out / RESULTS_MD}")
    return 0
