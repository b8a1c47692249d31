"""`clipmg wise`: WiSE-FT, the weight-space interpolation of a start and its fine-tune."""

from __future__ import annotations

from clipmg.cli.options import add_command, add_image_root_argument
from clipmg.cli.report import print_metrics
from clipmg.errors import DataError
from clipmg.inference import DEFAULT_BATCH_SIZE
from clipmg.jobs.wise import parse_alphas, wise_checkpoint, wise_sweep
from clipmg.metrics import VALIDATION_METRICS
from clipmg.utils import markdown_table


def add_wise_arguments(parser) -> None:
    parser.add_argument("--from", dest="start", required=True,
                        help="the start checkpoint (alpha 0): pretrained, zero-shot or the --init-from source")
    parser.add_argument("--to", dest="tuned", required=True, help="its fine-tune (alpha 1), same architecture")
    parser.add_argument("--alpha", default="0.5",
                        help="weight of the fine-tune: a number (default 0.5), or a sweep start:stop:step "
                             "(e.g. 0:1:0.1) or list 0,0.5,1 evaluated on --split, keeping the best")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--split", help="sweep: split CSV whose --subset frames score each alpha")
    parser.add_argument("--metadata", help="sweep: frames to score each alpha on (default: the split CSV)")
    parser.add_argument("--subset", default="val", choices=("train", "val", "all"), help="frames of --split")
    parser.add_argument("--metric", default="top1", choices=VALIDATION_METRICS, help="sweep: what picks the best")
    parser.add_argument("--labels", help="Clip_label.csv to rename the classes (ids must be the checkpoint's)")
    add_image_root_argument(parser, default="training/ beside the split, then the checkpoint's training images")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes")


def run(args) -> int:
    alphas = parse_alphas(args.alpha)
    if len(alphas) == 1 and not args.split and not args.metadata:
        folder = wise_checkpoint(args.start, args.tuned, alphas[0], args.out)
        print(f"wrote {folder}: (1 - {alphas[0]:g}) * {args.start} + {alphas[0]:g} * {args.tuned}")
        return 0
    if not args.split and not args.metadata:
        raise DataError("an --alpha sweep scores each alpha on frames: give --split (and/or --metadata)")
    result = wise_sweep(args.start, args.tuned, alphas, args.out, args.metadata or args.split, split=args.split,
                        subset=args.subset, metric=args.metric, labels=args.labels, image_root=args.image_root,
                        device=args.device, workers=args.workers, batch_size=args.batch_size)
    print(markdown_table(result["table"], digits=3))
    print(f"best {result['metric']} at alpha {result['best_alpha']:g}; wrote {result['checkpoint']} "
          f"(table and evaluations in {result['sweep_dir']})")
    print_metrics(result["best"])
    return 0


def register(sub) -> None:
    add_command(sub, "wise", "WiSE-FT: interpolate the weights of a start and its fine-tune "
                             "(or sweep alpha)", add_wise_arguments, run)
