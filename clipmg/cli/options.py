"""Options several commands share, declared once: data files and column names, the checkpoint and
inference settings, and the model to put prompts on."""

from __future__ import annotations

import argparse

from clipmg.data import Columns
from clipmg.inference import DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT, DEFAULT_TOPK, TTA_MODES

COLUMN_FLAGS = (("path", "Path"), ("class", "Class"), ("video", "Video ID"), ("frame", "Frame ID"),
                ("caption", "Caption"))


def add_command(sub, name: str, help: str, add_arguments, func) -> argparse.ArgumentParser:
    """A subcommand whose options one function declares and whose work one function does."""
    parser = sub.add_parser(name, help=help)
    add_arguments(parser)
    parser.set_defaults(func=func)
    return parser


def add_column_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """--path-column, --class-column, ...: the metadata's column names."""
    for column, default in COLUMN_FLAGS:
        if only is None or column in only:
            parser.add_argument(f"--{column}-column", default=default, help=f"column name (default {default!r})")


def columns_from_args(args: argparse.Namespace) -> Columns:
    return Columns(path=args.path_column, class_=args.class_column, video=args.video_column,
                   frame=args.frame_column, caption=args.caption_column)


def add_image_root_argument(parser: argparse.ArgumentParser, default: str = "training/ beside the metadata") -> None:
    parser.add_argument("--image-root", help=f"folder the Path column is relative to (default {default})")


def add_data_arguments(parser: argparse.ArgumentParser, metadata_required: bool = True) -> None:
    parser.add_argument("--metadata", required=metadata_required, help="train.xlsx or a .csv of frames")
    parser.add_argument("--labels", required=True, help="Clip_label.csv (id,name)")
    add_image_root_argument(parser)
    add_column_arguments(parser)


def add_frames_arguments(parser: argparse.ArgumentParser, metadata_help: str) -> None:
    """The frames a checkpoint is run on: a metadata file, or a split's subset."""
    parser.add_argument("--metadata", required=True, help=metadata_help)
    parser.add_argument("--split", help="split CSV (from `clipmg split` or a run's split.csv)")
    parser.add_argument("--subset", default="val", choices=("train", "val", "test", "all"),
                        help="which frames of --split (default val; test: the part that neither trained nor "
                             "chose a checkpoint)")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """How images are run through a model: batch size, device, decoding workers, bad images."""
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: min(4, CPU cores) with a GPU; on the CPU one "
                             "per 8 cores, so none below 8; 0 decodes in the main process)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="go on without missing or unreadable images, and list them")


def add_checkpoint_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--checkpoint", required=required, default=None if required else DEFAULT_CHECKPOINT,
                        help="checkpoint folder, or a run folder (its best/)"
                             + ("" if required else f" (default {DEFAULT_CHECKPOINT})"))
    parser.add_argument("--labels", help="Clip_label.csv to rename the classes (ids must be the checkpoint's); "
                                         "default: the class names stored in the checkpoint")


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    """A checkpoint (or a score-level ensemble of several) to classify with, its prompts, test-time
    augmentation, and the runtime options."""
    parser.add_argument("--checkpoint", nargs="+", default=[DEFAULT_CHECKPOINT], metavar="CHECKPOINT",
                        help="checkpoint folder, or a run folder (its best/); several: an ensemble averaging "
                             f"their class probabilities (same class ids) (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--weights", nargs="+", type=float, default=None,
                        help="ensemble: one weight per checkpoint (default equal)")
    parser.add_argument("--labels", help="Clip_label.csv to rename the classes (ids must be the checkpoint's); "
                                         "default: the class names stored in the checkpoint")
    parser.add_argument("--prompts", nargs="+", default=None,
                        help="prompt set (file or name) replacing the checkpoint's; several: one per checkpoint "
                             "(the same checkpoint may be given twice to ensemble two prompt sets)")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: average each frame's logits over views (flip: the frame and "
                             "its mirror image; crops: the frame and five crops); default none")
    add_adapt_bn_argument(parser)
    add_runtime_arguments(parser)
    parser.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="classes listed per image (default 5)")


def add_adapt_bn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapt-bn", action=argparse.BooleanOptionalAction, default=True,
                        help="re-estimate the image tower's batch-norm statistics on the frames to classify before "
                             "classifying them (test-time adaptation to a new session, camera or person; pixels "
                             "only, from 32 frames on; models without batch norm are unchanged); default on")


def add_prompt_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model prompts are put on: a checkpoint, or an open_clip model by name (zero-shot)."""
    group = parser.add_argument_group("model (one of)")
    group.add_argument("--checkpoint", help="checkpoint folder, or a run folder (its best/)")
    group.add_argument("--model", help="zero-shot: an open_clip model by name (e.g. ViT-B-32), no training")
    group.add_argument("--pretrained", help="with --model: open_clip pretrained tag (e.g. openai) or weights file")
    parser.add_argument("--labels", help="Clip_label.csv: class names (required with --model; with --checkpoint it "
                                         "renames the classes, ids must match)")
    add_runtime_arguments(parser)
    add_image_root_argument(parser)
    add_column_arguments(parser)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """--report FILE: the HTML page of the results (needs labelled frames)."""
    from clipmg.visual import DEFAULT_GALLERY_PER_CLASS

    parser.add_argument("--report", help="also write one self-contained HTML page of the results here: metrics, "
                                         "per-class bars, confusion heat map, misclassified frames")
    parser.add_argument("--report-per-class", type=int, default=DEFAULT_GALLERY_PER_CLASS,
                        help=f"misclassified frames shown per true class in --report (default "
                             f"{DEFAULT_GALLERY_PER_CLASS})")
