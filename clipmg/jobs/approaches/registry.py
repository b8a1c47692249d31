"""The approaches `clipmg compare` can run, by name.

An approach is a function `run(ctx: ComparisonContext) -> ApproachResult` registered by name:

    from clipmg.jobs.approaches import register_approach

    @register_approach("pose-fusion", description="image tower + pose keypoints")
    def pose_fusion(ctx):
        return ctx.train("pose-fusion", pose_fusion="concat")   # TrainConfig overrides

`ctx.train(name, **overrides)` trains with the comparison's common settings (data, split, seed,
mode) plus `overrides`, for the epochs this approach is given, and returns its best checkpoint;
`ctx.run(other)` gives another approach's result (trained once, e.g. the contrastive run a
fine-tuned head starts from).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clipmg.errors import DataError
from clipmg.training import TrainConfig, train
from clipmg.utils import logger


@dataclass
class ApproachResult:
    checkpoint: Path | list[Path]  # several: evaluated as a score-level ensemble
    budget: str  # what the approach was given, e.g. "15 epochs", for the table
    seconds: float = 0.0  # its own training time (not that of approaches it started from)
    tta: str = "none"  # test-time augmentation it is evaluated with


@dataclass
class Approach:
    name: str
    run: Callable[[ComparisonContext], ApproachResult]
    description: str = ""
    default: bool = True  # among the approaches `clipmg compare` runs when none are named


APPROACHES: dict[str, Approach] = {}


def register_approach(name: str, run: Callable | None = None, *, description: str = "", default: bool = True):
    """Register `run(ctx) -> ApproachResult` as approach `name` (replacing one of that name); also
    usable as a decorator `@register_approach(name, description=...)`. `default=False` leaves it
    out of the approaches `clipmg compare` runs when none are named."""

    def register(fn: Callable) -> Callable:
        APPROACHES[name] = Approach(name, fn, description, default)
        return fn

    return register(run) if run is not None else register


@dataclass
class ComparisonContext:
    """What approaches share: the data, the split, the settings, and each other's results."""

    metadata: Path
    labels: Path
    split: Path
    out_dir: Path
    base_settings: dict
    mode: str = "quick"
    epochs: dict[str, int] = field(default_factory=dict)
    image_root: Path | None = None
    results: dict[str, ApproachResult] = field(default_factory=dict)
    # best checkpoints by everything of their TrainConfig but the output folder: a comparison over
    # seeds passes one dict to all of them, so the ensemble of seed s reuses the runs of s+1, s+2
    trained: dict[str, Path] = field(default_factory=dict)
    _nested_seconds: float = 0.0

    def settings(self, name: str, **overrides) -> dict:
        """TrainConfig values for approach `name`: common < mode < overrides < its epoch budget."""
        values = {**self.base_settings, **overrides, "metadata": str(self.metadata), "labels": str(self.labels),
                  "split": str(self.split), "output": str(self.out_dir / name)}
        if self.image_root is not None:
            values["image_root"] = str(self.image_root)
        if name in self.epochs:
            values["epochs"] = self.epochs[name]
        return values

    def train(self, name: str, **overrides) -> ApproachResult:
        settings = self.settings(name, **overrides)
        key = json.dumps({k: v for k, v in settings.items() if k != "output"}, sort_keys=True, default=str)
        if key in self.trained:
            return ApproachResult(checkpoint=self.trained[key], budget=f"the same run as {self.trained[key]}")
        cfg = TrainConfig(**settings).validate()
        summary = train(cfg)
        best = self.trained[key] = Path(summary["run_dir"]) / "best"
        steps = f", at most {cfg.optim.max_steps_per_epoch} steps each" if cfg.optim.max_steps_per_epoch else ""
        budget = f"{cfg.optim.epochs} epochs{steps} (ran {summary['epochs_run']}, best {summary['best_epoch']})"
        return ApproachResult(checkpoint=best, budget=budget)

    def run(self, name: str) -> ApproachResult:
        """Approach `name`'s result, trained on first use."""
        if name not in self.results:
            if name not in APPROACHES:
                raise DataError(f"unknown approach {name!r}; known: {', '.join(APPROACHES)}")
            logger.info("comparison: training %s", name)
            start, nested_before = time.perf_counter(), self._nested_seconds
            result = APPROACHES[name].run(self)
            result.seconds = time.perf_counter() - start - (self._nested_seconds - nested_before)
            self._nested_seconds += result.seconds
            self.results[name] = result
        return self.results[name]
