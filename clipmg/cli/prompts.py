"""`clipmg prompts evaluate` (prompt sets side by side) and `clipmg prompts learn` (CoOp)."""

from __future__ import annotations

import pandas as pd

from clipmg.cli.options import add_adapt_bn_argument, add_prompt_model_arguments, columns_from_args
from clipmg.jobs.prompt_eval import evaluate_prompt_sets
from clipmg.jobs.prompt_learning import learn_prompts
from clipmg.losses import LOSS_NAMES
from clipmg.prompts import DEFAULT_CLASS_TEMPLATE, DEFAULT_N_CTX
from clipmg.utils import markdown_table


def add_evaluate_arguments(parser) -> None:
    parser.add_argument("--metadata", required=True, help="train.xlsx or a CSV of frames (or the split CSV)")
    parser.add_argument("--split", help="split CSV (from `clipmg split` or a run's split.csv)")
    parser.add_argument("--subset", default="val", choices=("train", "val", "test", "all"), help="frames of --split")
    parser.add_argument("--prompts", nargs="+", required=True,
                        help="prompt sets: YAML/text files, names in prompts/ (classnames, photo, "
                             "press_conference, descriptions), a learned-prompt checkpoint folder or its "
                             "prompt_learner.safetensors, or 'checkpoint' (the checkpoint's own set)")
    parser.add_argument("--out", help="folder for prompts.csv/.md/.json and tensorboard/ "
                                      "(default <run>/eval/prompts_<checkpoint>)")
    parser.add_argument("--no-tensorboard", action="store_true")
    add_prompt_model_arguments(parser)
    add_adapt_bn_argument(parser)


def evaluate(args) -> int:
    result = evaluate_prompt_sets(args.prompts, args.metadata, checkpoint=args.checkpoint, model=args.model,
                                  pretrained=args.pretrained, labels=args.labels, split=args.split,
                                  subset=args.subset, out_dir=args.out, image_root=args.image_root,
                                  columns=columns_from_args(args), batch_size=args.batch_size, device=args.device,
                                  workers=args.workers, skip_missing=args.skip_missing,
                                  tensorboard=not args.no_tensorboard, adapt_bn=args.adapt_bn)
    print(f"{len(result['table'])} prompt sets on {result['n_images']} frames of {result['frames']}"
          + (f" ({result['subset']})" if result["subset"] else "") + f", model {result['model']}"
          + (f"; {result['n_skipped']} images skipped" if result["n_skipped"] else ""))
    print(markdown_table(result["table"]))
    print("wrote " + ", ".join(str(p) for p in result["files"].values()))
    return 0


def add_learn_arguments(parser) -> None:
    parser.add_argument("--metadata", required=True, help="train.xlsx or a CSV of frames")
    parser.add_argument("--split", help="split CSV (train and val rows); default: the checkpoint run's split.csv, "
                                        "else a clip-grouped split of --metadata")
    parser.add_argument("--out", required=True, help="run folder: best/, last/ (checkpoints), history.csv")
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX, help="learnable context vectors (default 16)")
    parser.add_argument("--init", help="initialise the context from this phrase (e.g. 'a photo of a person'); "
                                       "default small random vectors")
    parser.add_argument("--class-template", default=DEFAULT_CLASS_TEMPLATE,
                        help="text after the context, {} = class name (default '{}.')")
    parser.add_argument("--descriptions", help="prompt set whose descriptions replace the class names")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--loss", default="ce", choices=LOSS_NAMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--no-tensorboard", action="store_true")
    add_prompt_model_arguments(parser)


def learn(args) -> int:
    summary = learn_prompts(args.out, args.metadata, checkpoint=args.checkpoint, model=args.model,
                            pretrained=args.pretrained, labels=args.labels, split=args.split,
                            image_root=args.image_root, columns=columns_from_args(args), n_ctx=args.n_ctx,
                            init=args.init, class_template=args.class_template, descriptions=args.descriptions,
                            epochs=args.epochs, batch_size=args.train_batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, loss=args.loss, seed=args.seed,
                            val_fraction=args.val_fraction, device=args.device, workers=args.workers,
                            encode_batch_size=args.batch_size, skip_missing=args.skip_missing,
                            tensorboard=not args.no_tensorboard)
    settings = summary["settings"]
    print(f"learned {settings['n_ctx']} context vectors on {settings['n_train']} frames in {summary['seconds']:.1f} s "
          f"(+{summary['encode_seconds']:.1f} s encoding the images once); validation: {settings['n_val']} frames "
          f"of {settings['split']}")
    rows = [{"prompts": name, **metrics} for name, metrics in summary["baselines"].items()]
    rows += [{"prompts": f"learned (last, epoch {settings['epochs']})", **summary["last"]},
             {"prompts": f"learned (best, epoch {summary['best']['epoch']})", **summary["best"]}]
    print(markdown_table(pd.DataFrame(rows), ["prompts", "top1", "top5", "balanced_accuracy", "clip_top1", "loss"]))
    print("note: 'best' is the epoch chosen on these validation frames (optimistic); 'last' is not selected")
    print(f"checkpoints: {summary['best_checkpoint']} and {summary['last_checkpoint']} "
          f"(python test.py --imagepathscsv x.csv --columnname Path --checkpoint {summary['best_checkpoint']})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("prompts", help="prompt experiments: compare prompt sets, learn prompts (CoOp)")
    prompts_sub = p.add_subparsers(dest="prompts_command", required=True)
    q = prompts_sub.add_parser("evaluate", help="evaluate several prompt sets on the same frames "
                                                "(table: CSV, Markdown, TensorBoard)")
    add_evaluate_arguments(q)
    q.set_defaults(func=evaluate)
    q = prompts_sub.add_parser("learn", help="learn context vectors for a frozen open_clip model (CoOp); "
                                             "writes a checkpoint")
    add_learn_arguments(q)
    q.set_defaults(func=learn)
