"""The benchmark's settings (`BenchSettings`), and what follows from them and the device:
data workers, torch threads and precision of both trainers."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.model_configs import open_clip_name
from clipmg.errors import DataError

DEFAULT_MODELS = ("openclip:clipmg-small", "openclip:clipmg-small-cliptext")
FRAMES_PER_CLIP = 4
IMIGUE_CLASSES = 32  # the per-image loop re-encodes one prompt set per class: its cost grows with them


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
    """fp32 on the CPU (bf16 autocast is much slower there); bf16 autocast on a GPU."""
    if device.type == "cuda":
        return {"clipmg": "bf16", "open_clip_train": "amp_bf16"}
    return {"clipmg": "fp32", "open_clip_train": "fp32"}


def settings_dict(settings: BenchSettings, parallel: dict, device: torch.device) -> dict:
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()}
    values["memory_rows"] = list(settings.memory_rows)
    values["models"] = list(settings.models)
    return {**values, **parallel, "precision": default_precision(device)}
