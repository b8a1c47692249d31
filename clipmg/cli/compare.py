"""`clipmg compare`: every approach on one split, one table."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipmg.cli.options import add_command
from clipmg.errors import DataError
from clipmg.jobs.approaches import APPROACHES
from clipmg.jobs.compare import MODES, compare, compare_seeds
from clipmg.jobs.demo import DEMO_DATA_SETS, demo_data_settings
from clipmg.synthetic import make_demo_data


def _parse_budget(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    try:
        epochs = int(value)
    except ValueError:
        epochs = 0
    if not name or epochs < 1:
        raise argparse.ArgumentTypeError(f"expected APPROACH=EPOCHS (e.g. linear-resnet50=3), got {text!r}")
    return name, epochs


def default_approaches() -> list[str]:
    return [name for name, approach in APPROACHES.items() if approach.default]


def add_compare_arguments(parser) -> None:
    parser.add_argument("--metadata", help="train.xlsx or .csv (default: generate the demo data into OUT/data)")
    parser.add_argument("--labels", help="Clip_label.csv (required with --metadata)")
    parser.add_argument("--split", help="split CSV shared by every approach (default: a clip-grouped split "
                                        "written to OUT/split.csv)")
    parser.add_argument("--out", required=True, help="folder for each approach's run and comparison.csv/.md")
    parser.add_argument("--approaches", nargs="+", default=None, metavar="NAME",
                        help="approaches to compare (default: " + ", ".join(default_approaches()) + "; also: "
                             + ", ".join(name for name in APPROACHES if name not in default_approaches()) + ")")
    parser.add_argument("--demo-data", choices=tuple(DEMO_DATA_SETS), default="frames",
                        help="without --metadata: frames (the demo's data), motion (clips of 8 frames, classes 1-4 "
                             "moving: for the clip-* approaches) or static (the same clips standing still)")
    parser.add_argument("--mode", choices=MODES, default="demo",
                        help="quick: tiny models, a few steps (smoke test); demo: clipmg demo settings (default)")
    parser.add_argument("--epochs", type=_parse_budget, action="append", default=[], metavar="APPROACH=N",
                        help="epoch budget of one approach (repeatable)")
    parser.add_argument("--image-root", help="folder the Path column is relative to")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda ... (default auto)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="run every approach once per seed (OUT/seed-<s>/) on one split and report each "
                             "metric's mean and standard deviation")


def run(args) -> int:
    out = Path(args.out)
    metadata, labels = args.metadata, args.labels
    if metadata is None:
        data = make_demo_data(out / "data", seed=args.seed or (args.seeds or [0])[0],
                              **demo_data_settings(args.demo_data, quick=args.mode == "quick"))
        metadata, labels = data["metadata"], data["labels"]
        print(f"demo data: {data['frames']} frames of {data['classes']} classes in {data['out']}")
    elif labels is None:
        raise DataError("--metadata needs --labels (Clip_label.csv)")
    base = {key: value for key, value in (("device", args.device), ("seed", args.seed)) if value is not None}
    approaches = args.approaches or default_approaches()
    if args.seeds:
        table = compare_seeds(metadata, labels, args.split, approaches, out, args.seeds, base, mode=args.mode,
                              epochs=dict(args.epochs), image_root=args.image_root)
    else:
        table = compare(metadata, labels, args.split, approaches, out, base, mode=args.mode,
                        epochs=dict(args.epochs), image_root=args.image_root)
    print((out / "comparison.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'comparison.csv'} and {out / 'comparison.md'} ({len(table)} approaches)")
    return 0


def register(sub) -> None:
    add_command(sub, "compare", "train every approach (contrastive, CNN heads, probe, pose, hand "
                                "crops) on one split and tabulate their metrics",
                add_compare_arguments, run)
