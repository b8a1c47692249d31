"""Compare approaches on one split (`clipmg compare`): each trains through the same data layer and
trainer, then every checkpoint is evaluated by `clipmg.predict.evaluate_checkpoint` on the same
validation frames, so the rows of `comparison.csv` / `comparison.md` differ only in the approach.

An approach is a function `run(ctx: ComparisonContext) -> ApproachResult` registered by name:

    from clipmg.compare import register_approach

    @register_approach("pose-fusion", description="image tower + pose keypoints")
    def pose_fusion(ctx):
        return ctx.train("pose-fusion", pose_fusion="concat")   # TrainConfig overrides

`ctx.train(name, **overrides)` trains with the comparison's common settings (data, split, seed,
mode) plus `overrides`, for the epochs this approach is given, and returns its best checkpoint;
`ctx.run(other)` gives another approach's result (trained once, e.g. the contrastive run a
fine-tuned head starts from). Quick mode (tests) trains tiny models for a few steps; demo mode
uses `clipmg.demo`'s data and settings with a per-approach epoch budget (`DEMO_EPOCHS`, or
`epochs={"linear-resnet50": 3}`), and the table says what each row was given.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clipmg import data as cdata
from clipmg.errors import DataError
from clipmg.utils import atomic_write_text, logger

METRIC_COLUMNS = ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "n_images")
MODES = ("quick", "demo")

# Quick mode: seconds per approach on a tiny dataset (tests, a smoke check).
QUICK_SETTINGS = {"model": "openclip:clipmg-tiny", "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8,
                  "image_size": 32, "warmup_steps": 1, "workers": 0, "tensorboard": False,
                  "lr_image": 1e-3, "lr_text": 1e-3, "lr_heads": 1e-3}
# Demo mode: epochs per approach (the contrastive run gets clipmg.demo's). Large CNNs from scratch
# are slow on a CPU; give them more with `--epochs linear-resnet50=20` where there is time.
DEMO_EPOCHS = {"linear-resnet50": 4, "linear-efficientnetv2_b0": 4, "linear-alexnet": 8, "zeroshot-head": 5}
# From scratch, like the demo's contrastive run: one learning rate for backbone and head.
CNN_SETTINGS = {"head": "linear", "lr_image": 1e-3, "lr_heads": 1e-3, "warmup_steps": 20}
FINE_TUNE_SETTINGS = {"head": "linear", "lr_image": 2e-4, "lr_heads": 1e-3, "warmup_steps": 10}
ALEXNET_MIN_SIZE = 64


@dataclass
class ApproachResult:
    checkpoint: Path
    budget: str  # what the approach was given, e.g. "15 epochs", for the table
    seconds: float = 0.0  # its own training time (not that of approaches it started from)


@dataclass
class Approach:
    name: str
    run: Callable[[ComparisonContext], ApproachResult]
    description: str = ""


APPROACHES: dict[str, Approach] = {}


def register_approach(name: str, run: Callable | None = None, *, description: str = ""):
    """Register `run(ctx) -> ApproachResult` as approach `name` (replacing one of that name); also
    usable as a decorator `@register_approach(name, description=...)`."""

    def register(fn: Callable) -> Callable:
        APPROACHES[name] = Approach(name, fn, description)
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
        from clipmg.train import TrainConfig, train

        cfg = TrainConfig(**self.settings(name, **overrides)).validate()
        summary = train(cfg)
        steps = f", at most {cfg.max_steps_per_epoch} steps each" if cfg.max_steps_per_epoch else ""
        budget = f"{cfg.epochs} epochs{steps} (ran {summary['epochs_run']}, best {summary['best_epoch']})"
        return ApproachResult(checkpoint=Path(summary["run_dir"]) / "best", budget=budget)

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


# ------------------------------------------------------------------------ built-in approaches
def _cnn(model: str):
    def run(ctx: ComparisonContext) -> ApproachResult:
        overrides = dict(CNN_SETTINGS, model=model)
        if model == "torchvision:alexnet":
            size = ctx.base_settings.get("image_size") or ALEXNET_MIN_SIZE
            overrides["image_size"] = max(int(size), ALEXNET_MIN_SIZE)
        return ctx.train(_CNN_NAMES[model], **overrides)

    return run


_CNN_NAMES = {"timm:resnet50": "linear-resnet50", "timm:tf_efficientnetv2_b0": "linear-efficientnetv2_b0",
              "torchvision:alexnet": "linear-alexnet"}


@register_approach("contrastive", description="image-text contrastive model, classes scored against prompts")
def contrastive(ctx: ComparisonContext) -> ApproachResult:
    return ctx.train("contrastive")


for _model, _name in _CNN_NAMES.items():
    register_approach(_name, _cnn(_model),
                      description=f"{_model} + linear head, cross-entropy (from scratch unless pretrained is set)")


@register_approach("zeroshot-head", description="contrastive image tower + linear head started at the zero-shot "
                                                "classifier (prompt embeddings), fine-tuned with cross-entropy")
def zeroshot_head(ctx: ComparisonContext) -> ApproachResult:
    source = ctx.run("contrastive")
    return ctx.train("zeroshot-head", **FINE_TUNE_SETTINGS, init_from=str(source.checkpoint), init_head="zeroshot")


@register_approach("linear-probe", description="logistic regression on the frozen contrastive image embeddings")
def linear_probe(ctx: ComparisonContext) -> ApproachResult:
    from clipmg.linear_probe import probe_checkpoint

    source = ctx.run("contrastive")
    summary = probe_checkpoint(source.checkpoint, ctx.split, ctx.out_dir / "linear-probe", labels=ctx.labels,
                               image_root=ctx.image_root, device=ctx.base_settings.get("device", "auto"),
                               workers=ctx.base_settings.get("workers"))
    return ApproachResult(checkpoint=Path(summary["checkpoint"]),
                          budget=f"L-BFGS, {summary['probe']['max_iter']} iterations max, on cached embeddings")


# ------------------------------------------------------------------------------ comparison
def mode_settings(mode: str) -> dict:
    """The settings every approach starts from in `mode`."""
    if mode not in MODES:
        raise DataError(f"unknown comparison mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "quick":
        return dict(QUICK_SETTINGS)
    from clipmg.demo import DEMO_TRAIN

    return {**DEMO_TRAIN, "tensorboard": True}


def ensure_split(metadata: Path, labels: Path, split: Path | None, out_dir: Path, seed: int) -> Path:
    """The split CSV every approach uses: `split`, or a clip-grouped one written to out_dir."""
    if split is not None:
        if not Path(split).is_file():
            raise DataError(f"split file not found: {split}")
        return Path(split)
    frames = cdata.read_metadata(metadata, labels=cdata.load_labels(labels))
    made = cdata.split_dataset(frames, by="clip", seed=seed)
    out_csv = out_dir / "split.csv"
    cdata.write_split(made, frames, out_csv)
    return out_csv


def compare(metadata: str | Path, labels: str | Path, split: str | Path | None, approaches: Sequence[str],
            out_dir: str | Path, base_settings: Mapping | None = None, *, mode: str = "quick",
            epochs: Mapping[str, int] | None = None, image_root: str | Path | None = None) -> pd.DataFrame:
    """Train each of `approaches` on the train frames of one split, evaluate each checkpoint on its
    val frames, and write `comparison.csv` and `comparison.md` into `out_dir`. `base_settings`
    (TrainConfig values) override the mode's settings for every approach; `epochs` gives single
    approaches their own epoch budget. Returns the table (one row per approach)."""
    unknown = [name for name in approaches if name not in APPROACHES]
    if unknown or not approaches:
        raise DataError(f"unknown approach(es) {', '.join(unknown) or '(none given)'}; known: {', '.join(APPROACHES)}")
    metadata, labels, out_dir = Path(metadata), Path(labels), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {**mode_settings(mode), **dict(base_settings or {})}
    split = ensure_split(metadata, labels, Path(split) if split else None, out_dir, int(settings.get("seed", 42)))
    budgets = {**(DEMO_EPOCHS if mode == "demo" else {}), **dict(epochs or {})}
    ctx = ComparisonContext(metadata=metadata, labels=labels, split=split, out_dir=out_dir, base_settings=settings,
                            mode=mode, epochs=budgets, image_root=Path(image_root) if image_root else None)
    rows = []
    for name in approaches:
        rows.append(evaluate_approach(ctx, name))
        write_table(pd.DataFrame(rows), out_dir, split, mode)  # a stopped comparison keeps its finished rows
    return pd.DataFrame(rows)


def evaluate_approach(ctx: ComparisonContext, name: str) -> dict:
    from clipmg.predict import evaluate_checkpoint

    result = ctx.run(name)
    metrics = evaluate_checkpoint(result.checkpoint, ctx.split, split=ctx.split, subset="val",
                                  out_dir=ctx.out_dir / name / "eval", image_root=ctx.image_root,
                                  device=ctx.base_settings.get("device", "auto"),
                                  workers=ctx.base_settings.get("workers"))
    return {"approach": name, **{key: metrics.get(key) for key in METRIC_COLUMNS},
            "train_seconds": round(result.seconds, 1), "budget": result.budget,
            "checkpoint": str(result.checkpoint), "description": APPROACHES[name].description}


def write_table(table: pd.DataFrame, out_dir: Path, split: Path, mode: str) -> None:
    table.to_csv(out_dir / "comparison.csv", index=False, float_format="%.4f")
    shown = table[["approach", *METRIC_COLUMNS, "train_seconds", "budget"]]
    lines = [f"Validation frames of {split} (mode {mode}); every row evaluated by clipmg evaluate.", "",
             "| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) and not k.endswith("seconds")
                                       else str(v) for k, v in zip(shown.columns, row)) + " |")
    atomic_write_text(out_dir / "comparison.md", "\n".join(lines) + "\n")


# -------------------------------------------------------------------------------------- CLI
def _parse_budget(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    try:
        epochs = int(value)
    except ValueError:
        epochs = 0
    if not name or epochs < 1:
        raise argparse.ArgumentTypeError(f"expected APPROACH=EPOCHS (e.g. linear-resnet50=3), got {text!r}")
    return name, epochs


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metadata", help="train.xlsx or .csv (default: generate the demo data into OUT/data)")
    parser.add_argument("--labels", help="Clip_label.csv (required with --metadata)")
    parser.add_argument("--split", help="split CSV shared by every approach (default: a clip-grouped split "
                                        "written to OUT/split.csv)")
    parser.add_argument("--out", required=True, help="folder for each approach's run and comparison.csv/.md")
    parser.add_argument("--approaches", nargs="+", default=None, metavar="NAME",
                        help="approaches to compare (default all registered: " + ", ".join(APPROACHES) + ")")
    parser.add_argument("--mode", choices=MODES, default="demo",
                        help="quick: tiny models, a few steps (smoke test); demo: clipmg demo settings (default)")
    parser.add_argument("--epochs", type=_parse_budget, action="append", default=[], metavar="APPROACH=N",
                        help="epoch budget of one approach (repeatable)")
    parser.add_argument("--image-root", help="folder the Path column is relative to")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda ... (default auto)")
    parser.add_argument("--seed", type=int, default=None)


def compare_from_args(args: argparse.Namespace) -> int:
    out = Path(args.out)
    metadata, labels = args.metadata, args.labels
    if metadata is None:
        from clipmg.demo import DEMO_DATA, QUICK_DATA

        data = cdata.make_demo_data(out / "data", seed=args.seed or 0,
                                    **(QUICK_DATA if args.mode == "quick" else DEMO_DATA))
        metadata, labels = data["metadata"], data["labels"]
        print(f"demo data: {data['frames']} frames of {data['classes']} classes in {data['out']}")
    elif labels is None:
        raise DataError("--metadata needs --labels (Clip_label.csv)")
    base = {key: value for key, value in (("device", args.device), ("seed", args.seed)) if value is not None}
    table = compare(metadata, labels, args.split, args.approaches or list(APPROACHES), out, base, mode=args.mode,
                    epochs=dict(args.epochs), image_root=args.image_root)
    print((out / "comparison.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'comparison.csv'} and {out / 'comparison.md'} ({len(table)} approaches)")
    return 0


# The pose approaches register themselves on import; MediaPipe loads only when one runs.
import clipmg.pose.approaches  # noqa: E402, F401
