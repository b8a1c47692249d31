"""`clipmg probe`: a linear probe on a checkpoint's frozen image embeddings."""

from __future__ import annotations

from clipmg.cli.options import add_column_arguments, add_command, columns_from_args
from clipmg.cli.report import print_metrics
from clipmg.errors import DataError
from clipmg.inference import DEFAULT_BATCH_SIZE
from clipmg.jobs.linear_probe import DEFAULT_L2, DEFAULT_MAX_ITER, probe_checkpoint
from clipmg.losses import CLASS_WEIGHTINGS


def add_probe_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="contrastive checkpoint (or run folder: its best/)")
    parser.add_argument("--split", required=True, help="split CSV (from `clipmg split` or a run's split.csv): "
                                                        "fit on its train frames, report on its val frames")
    parser.add_argument("--out", required=True, help="folder for features.safetensors (the cache) and checkpoint/")
    parser.add_argument("--labels", help="Clip_label.csv to rename the classes (ids must be the checkpoint's)")
    parser.add_argument("--image-root", help="folder the Path column is relative to (default training/ beside "
                                             "the split, then the checkpoint's training images)")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2,
                        help=f"L2 penalty on the head's weights (default {DEFAULT_L2})")
    parser.add_argument("--class-weighting", choices=CLASS_WEIGHTINGS, default="none",
                        help="class-weighted cross-entropy: inverse or sqrt inverse frequency (default none)")
    parser.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER, help="L-BFGS iterations")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes")
    add_column_arguments(parser)


def run(args) -> int:
    if args.max_iter < 1 or args.batch_size < 1:
        raise DataError("--max-iter and --batch-size must be at least 1")
    columns = columns_from_args(args)
    summary = probe_checkpoint(args.checkpoint, args.split, args.out, labels=args.labels, image_root=args.image_root,
                               columns=columns, l2=args.l2, class_weighting=args.class_weighting,
                               max_iter=args.max_iter, batch_size=args.batch_size, device=args.device,
                               workers=args.workers)
    how = "reused cached features" if summary["cached"] else f"encoded frames in {summary['encode_seconds']:.1f} s"
    print(f"linear probe: {how}; fitted on {summary['probe']['n_train']} frames in {summary['seconds']:.1f} s "
          f"(train top-1 {summary['probe']['train_top1']:.3f})")
    print(f"validation ({summary['metrics']['n_images']} frames of {args.split}):")
    print_metrics(summary["metrics"])
    print(f"  checkpoint {summary['checkpoint']} (use it with test.py, clipmg evaluate, or "
          "clipmg train --head linear --init-from)")
    return 0


def register(sub) -> None:
    add_command(sub, "probe", "linear probe: a logistic-regression head on a checkpoint's frozen "
                              "image features", add_probe_arguments, run)
