"""`clipmg predict` (what test.py runs) and `clipmg evaluate`."""

from __future__ import annotations

from pathlib import Path

from clipmg.cli.imports import folder_for
from clipmg.cli.options import (
    add_classify_arguments,
    add_column_arguments,
    add_command,
    add_frames_arguments,
    add_image_root_argument,
    add_report_arguments,
    columns_from_args,
)
from clipmg.cli.report import print_metrics
from clipmg.data import Columns
from clipmg.inference import evaluate_checkpoint, predict_csv
from clipmg.outputs import check_output_file
from clipmg.visual import write_html_report

SKIPS_PRINTED = 20


def converted_checkpoints(args) -> None:
    """A state dict file among --checkpoint, converted to a checkpoint folder on the fly; the
    --report page's place checked before any image is read."""
    args.checkpoint = [folder_for(c, args.labels) for c in args.checkpoint]
    if args.report:
        check_output_file(args.report, "--report")


def predict(args) -> int:
    converted_checkpoints(args)
    columns = Columns(path=args.columnname, class_=args.class_column, video=args.video_column,
                      frame=args.frame_column, caption=args.caption_column)
    summary = predict_csv(args.checkpoint, args.imagepathscsv, columns, output=args.output,
                          image_root=args.image_root, labels=args.labels, prompts=args.prompts,
                          batch_size=args.batch_size, device=args.device, topk=args.topk,
                          skip_missing=args.skip_missing, workers=args.workers,
                          weights=args.weights, tta=args.tta, gallery_per_class=gallery_size(args),
                          adapt_bn=args.adapt_bn)
    print(f"wrote {summary['output']}: {summary['n_rows']} rows, {summary['n_predicted']} predicted, "
          f"{summary['n_skipped']} skipped")
    if summary["n_skipped"]:
        print(f"skipped rows (status column of the output says why; first {len(summary['skipped'])}):")
        for item in summary["skipped"][:SKIPS_PRINTED]:
            print(f"  {item['reason']}")
        if summary["n_skipped"] > SKIPS_PRINTED:
            print(f"  ... and {summary['n_skipped'] - SKIPS_PRINTED} more")
    print(f"{summary['n_predicted']} images in {summary['seconds']:.1f} s: {summary['images_per_s']:.1f} images/s "
          f"(batch {summary['batch_size']}, decoding workers {summary['workers']}, {summary['device']})")
    if summary["clip_predictions"]:
        print(f"wrote {summary['clip_predictions']}: {summary['n_clips']} clips")
    if summary["n_predicted"] == 0:
        print("no image could be predicted: check the paths, --image-root ("
              + ", ".join(summary["image_roots"]) + " were searched) and the images")
        return 1
    metrics = summary["metrics"]
    if metrics is None:
        if summary["label_column"]:
            print(f"no metrics: no predicted row has a label in column {summary['label_column']!r}")
        if args.report:
            print(f"no report: {args.report} needs labelled frames (a {args.class_column!r} or "
                  f"{args.caption_column!r} column)")
        return 0
    unlabelled = f"; {summary['n_unlabelled']} predicted rows without a label are not scored" \
        if summary["n_unlabelled"] else ""
    print(f"metrics against column {summary['label_column']!r} over {metrics['n_images']} labelled frames{unlabelled}:")
    print_metrics(metrics, summary["metrics_files"])
    write_report_page(args, summary["metrics_files"], summary.get("gallery"),
                      f"{summary['checkpoint']} on {args.imagepathscsv}")
    return 0


def gallery_size(args) -> int:
    return max(0, args.report_per_class) if args.report else 0


def write_report_page(args, files, gallery, title: str) -> None:
    if args.report:
        path = write_html_report(args.report, files, gallery, title=f"clipmg: {title}")
        print(f"  report: {path} (open it in a browser)")


def evaluate(args) -> int:
    converted_checkpoints(args)
    metrics = evaluate_checkpoint(args.checkpoint, args.metadata, labels=args.labels, split=args.split,
                                  subset=args.subset, out_dir=args.out, image_root=args.image_root,
                                  columns=columns_from_args(args), prompts=args.prompts, batch_size=args.batch_size,
                                  device=args.device, workers=args.workers, skip_missing=args.skip_missing,
                                  topk=args.topk, weights=args.weights, tta=args.tta,
                                  gallery_per_class=gallery_size(args), adapt_bn=args.adapt_bn)
    what = f"{args.split} ({args.subset})" if args.split else args.metadata
    print(f"evaluated {metrics['checkpoint']} on {metrics['n_images']} frames of {what} in "
          f"{metrics['seconds']:.1f} s ({metrics['images_per_s']:.1f} images/s)")
    if metrics["n_skipped"]:
        print(f"skipped {metrics['n_skipped']} unreadable or missing images, e.g. {metrics['skipped'][0]['reason']}")
    out = Path(metrics["out_dir"])
    print_metrics(metrics, {"metrics": out / "metrics.json", "per_class": out / "per_class.csv",
                            "confusion": out / "confusion.csv", "confusion_png": out / "confusion.png",
                            "predictions": out / "predictions.csv", "clip_predictions": out / "clip_predictions.csv"})
    write_report_page(args, metrics["metrics_files"], metrics.get("gallery"), f"{metrics['checkpoint']} on {what}")
    return 0


def add_predict_arguments(parser) -> None:
    parser.add_argument("--imagepathscsv", required=True, help="CSV with one image path per row")
    parser.add_argument("--columnname", default="Path", help="column holding the image paths (default Path)")
    add_image_root_argument(parser, default="the CSV's folder, then training/ in it, then the checkpoint's "
                                            "training images")
    parser.add_argument("--output", help="predictions CSV (default predictions.csv beside the input)")
    add_classify_arguments(parser)
    parser.add_argument("--class-column", default="Class", help="class id column, for metrics (default Class)")
    parser.add_argument("--caption-column", default="Caption",
                        help="class name column, used for metrics when there is no class id (default Caption)")
    parser.add_argument("--video-column", default="Video ID",
                        help="clip column: clip_predictions.csv (one row per clip) and clip-level metrics")
    parser.add_argument("--frame-column", default="Frame ID",
                        help="frame order within a clip (a clip model reads K frames in this order)")
    add_report_arguments(parser)


def register(sub) -> None:
    add_command(sub, "predict", "classify the images listed in a CSV (same as test.py)",
                add_predict_arguments, predict)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a metadata file or split")
    add_frames_arguments(p, "train.xlsx or a CSV of frames with their classes")
    add_image_root_argument(p)
    p.add_argument("--out", help="folder for metrics.json, per_class.csv, confusion.csv/png "
                                 "(default <run>/eval/<checkpoint>)")
    add_classify_arguments(p)
    add_column_arguments(p)
    add_report_arguments(p)
    p.set_defaults(func=evaluate)
