"""Training throughput: clipmg's Trainer against `python -m open_clip_train.main` on the same
frames and captions, with the same batch size, precision, data workers and threads."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.dataset import BenchData, write_open_clip_csv
from benchmarks.machine import load_average, subprocess_env, torch_threads
from benchmarks.model_configs import model_config_dir, open_clip_name
from benchmarks.settings import BenchSettings
from clipmg.errors import DataError, TrainingError

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

OPEN_CLIP_STEP = re.compile(r"Train Epoch: \d+ \[\s*\d+/\d+ .*?Batch \(t\): [\d.]+, ([\d.eE+-]+)/s")


def train_config(model: str, data: BenchData, settings: BenchSettings, parallel: dict, precision: str,
                 output: Path):
    from clipmg.training import TrainConfig

    return TrainConfig(metadata=str(data.metadata), labels=str(data.labels), split=str(data.split_csv),
                       model=model, image_size=settings.image_size, text_source="caption", contrast="batch",
                       batch_size=settings.batch_size, workers=parallel["workers"], precision=precision,
                       epochs=2, device=settings.device, output=str(output), tensorboard=False,
                       seed=settings.seed).validate()


def train_after_warm_up(trainer, warmup_steps: int, steps: int) -> dict:
    """The stats of epoch 1, at most `steps` steps (0: all), after a warm-up epoch 0 of
    `warmup_steps` steps (none for 0). The limits are set on the trainer's own config: it holds a
    copy of the caller's, with the resolved learning rates."""
    if warmup_steps:
        trainer.cfg.optim.max_steps_per_epoch = warmup_steps
        trainer.train_epoch(0)
        trainer.state.step_in_epoch = 0
    trainer.cfg.optim.max_steps_per_epoch = steps
    return trainer.train_epoch(1)


def measure_clipmg_training(model: str, data: BenchData, settings: BenchSettings, parallel: dict,
                            precision: str, output: Path) -> dict:
    """samples/s of one epoch of clipmg's Trainer after a warm-up of `warmup_steps` steps;
    leaves a checkpoint in `output/bench` for the inference measurements."""
    from clipmg.training import Trainer

    cfg = train_config(model, data, settings, parallel, precision, output)
    trainer = Trainer(cfg)
    load_before = load_average()
    try:
        with torch_threads(parallel["train_threads"]):
            trainer.setup()
            stats = train_after_warm_up(trainer, settings.warmup_steps,
                                        settings.max_train_steps)
        trainer.save("bench", with_state=False)
    finally:
        # what Trainer.fit does on its way out: leave a process group torchrun made the Trainer join
        if trainer.env.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    steps = math.ceil(len(trainer.train_dataset) / cfg.optim.batch_size)
    if settings.max_train_steps:
        steps = min(steps, settings.max_train_steps)
    return {"samples_per_s": stats["samples_per_s"], "steps": steps,
            "samples": min(len(trainer.train_dataset), steps * cfg.optim.batch_size),
            "warmup_steps": settings.warmup_steps, "text_source": cfg.text.text_source,
            "contrast": cfg.objective.contrast,
            "precision": precision, "workers": cfg.data.workers, "threads": parallel["train_threads"],
            "grad_clip": cfg.optim.grad_clip, "load_average_1min": [load_before, load_average()],
            "checkpoint": str(output / "bench")}


def open_clip_train_command(model: str, train_csv: Path, settings: BenchSettings, parallel: dict,
                            precision: str, device: torch.device, grad_clip: float | None) -> list[str]:
    command = [sys.executable, "-c", OPEN_CLIP_TRAIN_SHIM, str(parallel["train_threads"]), str(model_config_dir()),
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
