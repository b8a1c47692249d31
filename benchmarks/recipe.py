"""Training throughput of `clipmg train`'s defaults against the settings they replaced, on the
demo's frames at the demo's input size (a measurement that prints its figures; nothing is
asserted about them).

    python benchmarks/recipe.py [--steps 8 --repeats 2 --device auto]

Recipes: `defaults` (what the demo runs: TrainConfig's defaults at 64 px), `former defaults`
(rates 1e-4 / 1e-5 / 1e-3, 50 warm-up steps, 2 data workers) and `former demo` (the demo's
explicit flags before the recipe: rates 2e-3 / 1e-3 / 2e-3, no workers, 20 warm-up steps). The
rates do not change the cost of a step; the data workers do. Each measured epoch starts its data
workers, as every epoch of a real run does. Recipes run `repeats` times, interleaved, and the
fastest run of each counts; the ratio is against `former defaults`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import run_and_print, settings_parser  # noqa: E402
from clipmg.utils import keep_freed_memory_for_reuse, set_progress  # noqa: E402

RECIPES = {
    "defaults": {},
    "former defaults": {"lr_image": 1e-4, "lr_text": 1e-5, "lr_heads": 1e-3, "warmup": 50, "workers": 2},
    "former demo": {"lr_image": 2e-3, "lr_text": 1e-3, "lr_heads": 2e-3, "warmup": 20, "workers": 0},
}
BASELINE = "former defaults"


@dataclass
class RecipeBenchSettings:
    steps: int = 8
    warmup_steps: int = 1
    repeats: int = 2
    clips: int = 60
    frames_per_clip: int = 12
    device: str = "auto"
    seed: int = 0


def measure(settings: RecipeBenchSettings, data: dict, output: Path, recipe: dict) -> dict:
    """samples/s of one epoch of `steps` steps after a warm-up epoch, as `clipmg train` runs it."""
    from benchmarks.training import train_after_warm_up
    from clipmg.jobs.demo import DEMO_TRAIN
    from clipmg.training import TrainConfig, Trainer
    from clipmg.utils import threads_beside_workers

    cfg = TrainConfig(**{**DEMO_TRAIN, **recipe}, metadata=data["metadata"], labels=data["labels"],
                      output=str(output), tensorboard=False, device=settings.device, seed=settings.seed).validate()
    trainer = Trainer(cfg)
    with threads_beside_workers(trainer.device, trainer.workers):
        trainer.setup()
        stats = train_after_warm_up(trainer, settings.warmup_steps, settings.steps)
    return {"samples_per_s": stats["samples_per_s"], "workers": trainer.workers, "batch_size": cfg.optim.batch_size,
            "image_size": cfg.network.image_size}


def run(settings: RecipeBenchSettings, work: Path) -> dict:
    from clipmg.synthetic import make_demo_data

    data = make_demo_data(work / "data", clips=settings.clips, frames_per_clip=settings.frames_per_clip, size=64,
                          seed=settings.seed)
    results = {"settings": asdict(settings), "recipes": {name: {"runs": []} for name in RECIPES}}
    for repeat in range(settings.repeats):
        for name, recipe in RECIPES.items():
            run_dir = work / f"{name.replace(' ', '-')}-{repeat}"
            results["recipes"][name]["runs"].append(measure(settings, data, run_dir, recipe))
    for row in results["recipes"].values():
        row["best"] = max(row["runs"], key=lambda r: r["samples_per_s"])
    baseline = results["recipes"][BASELINE]["best"]["samples_per_s"]
    for row in results["recipes"].values():
        row["ratio"] = row["best"]["samples_per_s"] / baseline
    return results


def render(results: dict) -> str:
    s = results["settings"]
    lines = [f"demo frames at 64 px, {s['steps']} measured steps per run, fastest of {s['repeats']} interleaved runs",
             "", f"| recipe | data workers | train samples/s (each run) | ratio to {BASELINE} |", "|---|---|---|---|"]
    for name, row in results["recipes"].items():
        each = ", ".join(f"{r['samples_per_s']:.1f}" for r in row["runs"])
        lines.append(f"| {name} | {row['best']['workers']} | {row['best']['samples_per_s']:.1f} ({each}) | "
                     f"{row['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = RecipeBenchSettings()
    args = settings_parser("benchmarks/recipe.py", __doc__, defaults).parse_args(argv)
    keep_freed_memory_for_reuse()
    set_progress(False)
    settings = RecipeBenchSettings(**{k: v for k, v in vars(args).items() if k in asdict(defaults)})
    return run_and_print(run, settings, render, ["python", "benchmarks/recipe.py", *argv], args.out, args.work_dir)


if __name__ == "__main__":
    sys.exit(main())
