"""`clipmg check`, `clipmg split`, `clipmg make-demo-data`."""

from __future__ import annotations

import json

from clipmg.cli.options import add_data_arguments, columns_from_args
from clipmg.data import check_dataset, load_labels, read_metadata, split_dataset, write_split
from clipmg.data.splits import SPLIT_BY
from clipmg.synthetic import make_demo_data


def check(args) -> int:
    report = check_dataset(args.metadata, args.labels, image_root=args.image_root, columns=columns_from_args(args),
                           skip_bad_images=args.skip_bad_images, verify_images=not args.no_decode)
    print(report.to_text())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2, default=str)
    return 0 if report.ok else 1


def split(args) -> int:
    frames = read_metadata(args.metadata, labels=load_labels(args.labels), columns=columns_from_args(args))
    made = split_dataset(frames, by=args.by, val_fraction=args.val_fraction, seed=args.seed,
                         subject_column=args.subject_column, test_fraction=args.test_fraction)
    _, report_json = write_split(made, frames, args.out)
    report = made.report
    test = f" / {report['rows_test']} test" if report.get("rows_test") else ""
    print(f"split by {args.by}: {report['rows_train']} training / {report['rows_val']} validation{test} frames, "
          f"{report['classes_val']} classes in validation")
    print(f"leakage: {report['leakage']:.4f} of validation frames come from clips that also have training frames")
    if report.get("warning"):
        print(f"warning: {report['warning']}")
    for key in ("single_clip_classes", "classes_missing_from_val"):
        if report.get(key):
            print(f"{key.replace('_', ' ')}: {report[key]}")
    print(f"wrote {args.out} and {report_json}")
    return 0


def make_demo(args) -> int:
    info = make_demo_data(args.out, classes=args.classes, clips=args.clips, frames_per_clip=args.frames_per_clip,
                          size=args.size, seed=args.seed, motion=args.motion, subjects=args.subjects)
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(sub) -> None:
    p = sub.add_parser("check", help="validate metadata, labels and images, and report")
    add_data_arguments(p)
    p.add_argument("--skip-bad-images", action="store_true", help="count unreadable images instead of failing")
    p.add_argument("--no-decode", action="store_true", help="only check that image files exist")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(func=check)

    p = sub.add_parser("split", help="split frames into training, validation and test without clip leakage")
    add_data_arguments(p)
    p.add_argument("--by", choices=SPLIT_BY, default="clip",
                   help="keep clips (or subjects) on one side; frames leaks near-duplicates (default clip)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the frames that chooses the checkpoint (default 0.2)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of the frames set apart as a test part, scored once at the end (default 0.1; "
                        "0: none, and the run's figures then come from the frames that chose its checkpoint)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--subject-column", help="column naming the subject (for --by subject)")
    p.add_argument("--out", default="split.csv")
    p.set_defaults(func=split)

    p = sub.add_parser("make-demo-data", help="generate a small dataset in the iMiGUE layout")
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--clips", type=int, default=240)
    p.add_argument("--frames-per-clip", type=int, default=4)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--motion", action="store_true",
                   help="classes 1-4 move (up/down, once/three times): only the order of a clip's frames tells "
                        "them apart (needs --frames-per-clip 8 or more)")
    p.add_argument("--subjects", type=int,
                   help="share the clips among N people, one look each, in a Subject column "
                        "(for a split by subject: --by subject --subject-column Subject)")
    p.set_defaults(func=make_demo)
