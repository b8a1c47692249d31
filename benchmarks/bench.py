"""Throughput and memory benchmark: clipmg against open_clip_train and a per-image loop.

    python benchmarks/bench.py --out docs/bench/<name> [--update-doc docs/benchmarks.md]

`--help` lists the options; benchmarks/runner.py describes the measurements and
docs/benchmarks.md the results.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:
    # Run as a script (`python benchmarks/bench.py`): the `benchmarks` package is found from the
    # repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import (  # noqa: E402
    DOC_BEGIN,
    DOC_END,
    RESULTS_JSON,
    RESULTS_MD,
    render_markdown,
    update_doc,
)
from benchmarks.runner import run_benchmark  # noqa: E402
from benchmarks.settings import BenchSettings  # noqa: E402
from clipmg.utils import keep_freed_memory_for_reuse  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(prog="benchmarks/bench.py", description=__doc__.split("\n\n")[0])
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
                             command=shlex.join(["python", "benchmarks/bench.py", *argv]))
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


if __name__ == "__main__":
    sys.exit(main())
