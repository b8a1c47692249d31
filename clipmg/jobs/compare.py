"""Compare approaches on one split (`clipmg compare`): each trains through the same data layer and
trainer, then every checkpoint is evaluated by `clipmg.inference.evaluate_checkpoint` on the same
validation frames, so the rows of `comparison.csv` / `comparison.md` differ only in the approach.

Approaches are registered by name in `clipmg.jobs.approaches`. Quick mode (tests) trains tiny
models for a few steps; demo mode uses the demo's data and training settings with a
per-approach epoch budget (`DEMO_EPOCHS`, or `epochs={"linear-resnet50": 3}`), and the table
says what each row was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from clipmg import data as cdata
from clipmg.errors import DataError
from clipmg.inference import evaluate_checkpoint
from clipmg.jobs.approaches import APPROACHES, ComparisonContext
from clipmg.jobs.demo import DEMO_TRAIN
from clipmg.training.config import DEFAULT_TEST_FRACTION
from clipmg.utils import atomic_write_text, markdown_table

METRIC_COLUMNS = ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "clip_balanced_accuracy",
                  "clip_majority_top1", "n_images")
#: a clip model's own clip predictions; columns of the table when one of its rows has them
CLIP_MODEL_COLUMNS = ("clip_model_top1", "clip_model_balanced_accuracy", "clip_model_macro_f1")
MODES = ("quick", "demo")

# Quick mode: seconds per approach on a tiny dataset (tests, a smoke check).
QUICK_SETTINGS = {"model": "openclip:clipmg-tiny", "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8,
                  "image_size": 32, "warmup": 1, "workers": 0, "tensorboard": False}
# Demo mode: epochs per approach (the contrastive run gets the demo's). Large CNNs from scratch
# are slow on a CPU; give them more with `--epochs linear-resnet50=20` where there is time.
# A clip model's epoch is the frame model's steps of as many clips, K = 8 times the frames: one
# epoch of fine-tuning from the frame model is about what five were under 4 clips a step.
DEMO_EPOCHS = {"linear-resnet50": 4, "linear-efficientnetv2_b0": 4, "linear-alexnet": 8, "zeroshot-head": 5,
               "fine-tune": 5, "lora": 5, "layer-decay": 5, "clip-mean": 1, "clip-attention": 1,
               "clip-transformer": 1}


def mode_settings(mode: str) -> dict:
    """The settings every approach starts from in `mode`."""
    if mode not in MODES:
        raise DataError(f"unknown comparison mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "quick":
        return dict(QUICK_SETTINGS)
    return {**DEMO_TRAIN, "tensorboard": True}


def ensure_split(metadata: Path, labels: Path, split: Path | None, out_dir: Path, seed: int) -> Path:
    """The split CSV every approach uses: `split`, or a clip-grouped one written to out_dir."""
    if split is not None:
        if not Path(split).is_file():
            raise DataError(f"split file not found: {split}")
        return Path(split)
    frames = cdata.read_metadata(metadata, labels=cdata.load_labels(labels))
    made = cdata.split_dataset(frames, by="clip", seed=seed, test_fraction=DEFAULT_TEST_FRACTION)
    out_csv = out_dir / "split.csv"
    cdata.write_split(made, frames, out_csv)
    return out_csv


def scored_part(split: Path) -> str:
    """The part of `split` the rows are scored on: its test part when it has one (frames that chose
    no checkpoint), else validation."""
    return "test" if (pd.read_csv(split, usecols=["split"])["split"].str.strip().str.lower() == "test").any() else "val"


def part_title(split: Path) -> str:
    return (f"Test frames of {split} (they neither trained nor chose any checkpoint)" if scored_part(split) == "test"
            else f"Validation frames of {split} (they chose each row's checkpoint, which flatters every row)")


def compare(metadata: str | Path, labels: str | Path, split: str | Path | None, approaches: Sequence[str],
            out_dir: str | Path, base_settings: Mapping | None = None, *, mode: str = "quick",
            epochs: Mapping[str, int] | None = None, image_root: str | Path | None = None,
            trained: dict[str, Path] | None = None) -> pd.DataFrame:
    """Train each of `approaches` on the train frames of one split, evaluate each checkpoint on its
    val frames, and write `comparison.csv` and `comparison.md` into `out_dir`. `base_settings`
    (TrainConfig values) override the mode's settings for every approach; `epochs` gives single
    approaches their own epoch budget; `trained` (`ComparisonContext.trained`) lends runs already
    trained with the same settings. Returns the table (one row per approach)."""
    unknown = [name for name in approaches if name not in APPROACHES]
    if unknown or not approaches:
        raise DataError(f"unknown approach(es) {', '.join(unknown) or '(none given)'}; known: {', '.join(APPROACHES)}")
    metadata, labels, out_dir = Path(metadata), Path(labels), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {**mode_settings(mode), **dict(base_settings or {})}
    split = ensure_split(metadata, labels, Path(split) if split else None, out_dir, int(settings.get("seed", 42)))
    budgets = {**(DEMO_EPOCHS if mode == "demo" else {}), **dict(epochs or {})}
    ctx = ComparisonContext(metadata=metadata, labels=labels, split=split, out_dir=out_dir, base_settings=settings,
                            mode=mode, epochs=budgets, image_root=Path(image_root) if image_root else None,
                            trained=trained if trained is not None else {})
    rows = []
    for name in approaches:
        rows.append(evaluate_approach(ctx, name))
        write_table(pd.DataFrame(rows), out_dir, split, mode)  # a stopped comparison keeps its finished rows
    return pd.DataFrame(rows)


def evaluate_approach(ctx: ComparisonContext, name: str) -> dict:
    result = ctx.run(name)
    metrics = evaluate_checkpoint(result.checkpoint, ctx.split, split=ctx.split, subset=scored_part(ctx.split),
                                  out_dir=ctx.out_dir / name / "eval", image_root=ctx.image_root,
                                  device=ctx.base_settings.get("device", "auto"),
                                  workers=ctx.base_settings.get("workers"), tta=result.tta)
    checkpoint = result.checkpoint if isinstance(result.checkpoint, Path) else " ".join(map(str, result.checkpoint))
    return {"approach": name, **{key: metrics.get(key) for key in (*METRIC_COLUMNS, *CLIP_MODEL_COLUMNS)},
            "train_seconds": round(result.seconds, 1), "budget": result.budget,
            "checkpoint": str(checkpoint), "description": APPROACHES[name].description}


def compare_seeds(metadata: str | Path, labels: str | Path, split: str | Path | None, approaches: Sequence[str],
                  out_dir: str | Path, seeds: Sequence[int], base_settings: Mapping | None = None,
                  **options) -> pd.DataFrame:
    """`compare` once per seed (into `out_dir/seed-<s>/`) on one split (made with the first seed
    unless given), then `comparison.csv` / `.md` in `out_dir`: each metric's mean and standard
    deviation over the seeds per approach. A run that one seed needs and another already trained
    (an ensemble's members are the next seeds' runs) is trained once. Returns that table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = ensure_split(Path(metadata), Path(labels), Path(split) if split else None, out_dir, int(seeds[0]))
    tables, trained = [], {}
    for seed in seeds:
        table = compare(metadata, labels, split, approaches, out_dir / f"seed-{seed}",
                        {**dict(base_settings or {}), "seed": seed}, trained=trained, **options)
        tables.append(table.assign(seed=seed))
    runs = pd.concat(tables, ignore_index=True)
    numeric = [c for c in (*METRIC_COLUMNS, "train_seconds") if c in runs]
    grouped = runs.groupby("approach", sort=False)[numeric]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std")).reset_index()
    summary.insert(1, "seeds", len(seeds))
    atomic_write_text(out_dir / "comparison_runs.csv", runs.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out_dir / "comparison.csv", summary.to_csv(index=False, float_format="%.4f"))
    shown = pd.DataFrame({"approach": summary["approach"], **{
        c: [f"{m:.3f} ± {sd:.3f}" for m, sd in zip(summary[f"{c}_mean"], summary[f"{c}_std"].fillna(0.0))]
        for c in numeric if c != "n_images"}})
    atomic_write_text(out_dir / "comparison.md", f"{part_title(split)}, mean ± standard deviation over "
                      f"seeds {', '.join(map(str, seeds))}; every run evaluated by clipmg evaluate.\n\n"
                      f"{markdown_table(shown, digits=3)}\n")
    return summary


def write_table(table: pd.DataFrame, out_dir: Path, split: Path, mode: str) -> None:
    clip_model = [key for key in CLIP_MODEL_COLUMNS if table[key].notna().any()]
    table = table.drop(columns=[key for key in CLIP_MODEL_COLUMNS if key not in clip_model])
    atomic_write_text(out_dir / "comparison.csv", table.to_csv(index=False, float_format="%.4f"))
    shown = markdown_table(table, ["approach", *METRIC_COLUMNS, *clip_model, "train_seconds", "budget"], digits=3,
                           verbatim=("train_seconds",))
    atomic_write_text(out_dir / "comparison.md", f"{part_title(split)} (mode {mode}); every row "
                      f"evaluated by clipmg evaluate.\n\n{shown}\n")
