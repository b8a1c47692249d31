"""The `clipmg` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from clipmg.errors import ClipmgError
from clipmg.utils import keep_freed_memory_for_reuse, set_progress


def _add_data_arguments(parser: argparse.ArgumentParser, metadata_required: bool = True) -> None:
    parser.add_argument("--metadata", required=metadata_required, help="train.xlsx or a .csv of frames")
    parser.add_argument("--labels", required=True, help="Clip_label.csv (id,name)")
    parser.add_argument("--image-root", help="folder the Path column is relative to (default: training/ beside the metadata)")
    for column, default in (("path", "Path"), ("class", "Class"), ("video", "Video ID"),
                            ("frame", "Frame ID"), ("caption", "Caption")):
        parser.add_argument(f"--{column}-column", default=default, help=f"column name (default {default!r})")


def _columns(args):
    from clipmg.data import Columns

    return Columns(path=args.path_column, class_=args.class_column, video=args.video_column,
                   frame=args.frame_column, caption=args.caption_column)


# ------------------------------------------------------------------ data commands
def cmd_check(args) -> int:
    from clipmg.data import check_dataset

    report = check_dataset(args.metadata, args.labels, image_root=args.image_root, columns=_columns(args),
                           skip_bad_images=args.skip_bad_images, verify_images=not args.no_decode)
    print(report.to_text())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2, default=str)
    return 0 if report.ok else 1


def cmd_split(args) -> int:
    from clipmg.data import load_labels, read_metadata, split_dataset, write_split

    labels = load_labels(args.labels)
    frames = read_metadata(args.metadata, labels=labels, columns=_columns(args))
    split = split_dataset(frames, by=args.by, val_fraction=args.val_fraction, seed=args.seed,
                          subject_column=args.subject_column)
    _, report_json = write_split(split, frames, args.out)
    report = split.report
    print(f"split by {args.by}: {report['rows_train']} training / {report['rows_val']} validation frames, "
          f"{report['classes_val']} classes in validation")
    print(f"leakage: {report['leakage']:.4f} of validation frames come from clips that also have training frames")
    if report.get("warning"):
        print(f"warning: {report['warning']}")
    for key in ("single_clip_classes", "classes_missing_from_val"):
        if report.get(key):
            print(f"{key.replace('_', ' ')}: {report[key]}")
    print(f"wrote {args.out} and {report_json}")
    return 0


def cmd_make_demo_data(args) -> int:
    from clipmg.data import make_demo_data

    info = make_demo_data(args.out, classes=args.classes, clips=args.clips, frames_per_clip=args.frames_per_clip,
                          size=args.size, seed=args.seed)
    print(json.dumps(info, indent=2, default=str))
    return 0


# -------------------------------------------------------------- model commands
def cmd_train(args) -> int:
    from clipmg.train import load_run_config, resolve_config, train

    base = load_run_config(args.resume) if args.resume else None
    cfg = resolve_config(args, base=base)
    summary = train(cfg, resume=args.resume)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_demo(args) -> int:
    from clipmg.demo import print_summary, run_demo

    summary = run_demo(args.out, epochs=args.epochs, quick=args.quick, seed=args.seed, device=args.device)
    print_summary(summary)
    return 0


def cmd_predict(args) -> int:
    from clipmg.predict import run_from_args

    return run_from_args(args)


def cmd_evaluate(args) -> int:
    from clipmg.predict import evaluate_from_args

    return evaluate_from_args(args)


def cmd_embed(args) -> int:
    from clipmg.embed import embed_from_args

    return embed_from_args(args)


def cmd_prompts(args) -> int:
    from clipmg import prompt_experiments, prompt_learning

    run = {"evaluate": prompt_experiments.evaluate_from_args, "learn": prompt_learning.learn_from_args}
    return run[args.prompts_command](args)


def cmd_probe(args) -> int:
    from clipmg.linear_probe import probe_from_args

    return probe_from_args(args)


def cmd_compare(args) -> int:
    from clipmg.compare import compare_from_args

    return compare_from_args(args)


def cmd_keypoints(args) -> int:
    from clipmg.pose.commands import keypoints_from_args

    return keypoints_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipmg", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate metadata, labels and images, and report")
    _add_data_arguments(p)
    p.add_argument("--skip-bad-images", action="store_true", help="count unreadable images instead of failing")
    p.add_argument("--no-decode", action="store_true", help="only check that image files exist")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("split", help="split frames into training and validation without clip leakage")
    _add_data_arguments(p)
    p.add_argument("--by", choices=("clip", "subject", "frames"), default="clip")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--subject-column", help="column naming the subject (for --by subject)")
    p.add_argument("--out", default="split.csv")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("make-demo-data", help="generate a small dataset in the iMiGUE layout")
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--clips", type=int, default=240)
    p.add_argument("--frames-per-clip", type=int, default=4)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_demo_data)

    from clipmg.train.config import add_config_arguments

    p = sub.add_parser("train", help="train or fine-tune a contrastive model",
                       description="Settings come from --config (YAML) and are overridden by flags.")
    p.add_argument("--config", help="YAML file of settings (any flag below, with _ for -)")
    p.add_argument("--resume", help="run folder to continue exactly where it stopped")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the main job: demo data, training, evaluation, predictions")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="a much smaller run (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)

    from clipmg.predict import add_evaluate_arguments, add_predict_arguments

    p = sub.add_parser("predict", help="classify the images listed in a CSV (same as test.py)")
    add_predict_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a metadata file or split")
    add_evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    from clipmg.embed import add_embed_arguments

    p = sub.add_parser("embed", help="TensorBoard projector run and 2-D map of image and prompt embeddings")
    add_embed_arguments(p)
    p.set_defaults(func=cmd_embed)

    from clipmg.prompt_experiments import add_evaluate_arguments as add_prompts_evaluate_arguments
    from clipmg.prompt_learning import add_learn_arguments

    p = sub.add_parser("prompts", help="prompt experiments: compare prompt sets, learn prompts (CoOp)")
    prompts_sub = p.add_subparsers(dest="prompts_command", required=True)
    add_prompts_evaluate_arguments(prompts_sub.add_parser(
        "evaluate", help="evaluate several prompt sets on the same frames (table: CSV, Markdown, TensorBoard)"))
    add_learn_arguments(prompts_sub.add_parser(
        "learn", help="learn context vectors for a frozen open_clip model (CoOp); writes a checkpoint"))
    p.set_defaults(func=cmd_prompts)

    from clipmg.linear_probe import add_probe_arguments

    p = sub.add_parser("probe", help="linear probe: a logistic-regression head on a checkpoint's frozen image features")
    add_probe_arguments(p)
    p.set_defaults(func=cmd_probe)

    from clipmg.compare import add_compare_arguments

    p = sub.add_parser("compare", help="train every approach (contrastive, CNN heads, probe, pose, hand crops) "
                                       "on one split and tabulate their metrics")
    add_compare_arguments(p)
    p.set_defaults(func=cmd_compare)

    from clipmg.pose.commands import add_keypoints_arguments

    p = sub.add_parser("keypoints", help="MediaPipe pose and hand keypoints: fill the cache ahead of training "
                                         "(needs the pose extra)")
    add_keypoints_arguments(p)
    p.set_defaults(func=cmd_keypoints)
    return parser


def configure_logging(quiet: bool, verbose: bool) -> None:
    """clipmg's own logger speaks at INFO; other libraries (open_clip logs to the root logger) only
    warn."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("clipmg").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    set_progress(not quiet)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    keep_freed_memory_for_reuse()
    try:
        return args.func(args)
    except ClipmgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
