"""`clipmg lab`: a checkpoint's prompts, metrics, mistakes and clips, live in the browser."""

from __future__ import annotations

import importlib.util
import time

from clipmg.cli.options import (
    add_column_arguments,
    add_command,
    add_frames_arguments,
    add_image_root_argument,
    add_runtime_arguments,
    columns_from_args,
)
from clipmg.errors import ClipmgError

LAB_MODULES = ("starlette", "uvicorn")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its best/)")
    add_frames_arguments(parser, "train.xlsx or a CSV of frames (or the split CSV) with Path and Class columns")
    parser.add_argument("--labels", help="Clip_label.csv to rename the classes (ids must be the checkpoint's)")
    parser.add_argument("--prompts", help="prompt set to start from (a file or a name in prompts/); "
                                          "default the checkpoint's own")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                                                            "machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    parser.add_argument("--cache", help="folder for the frames' features and saved prompt sets "
                                        "(default <run>/lab/<checkpoint name>)")
    parser.add_argument("--no-cache", action="store_true", help="encode the frames again, write no cache")
    add_runtime_arguments(parser)
    add_image_root_argument(parser)
    add_column_arguments(parser)


def check_lab_extra() -> None:
    missing = [name for name in LAB_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ClipmgError(f"clipmg lab needs the lab extra ({', '.join(missing)} missing): "
                          "pip install 'clipmg[lab]' (or bash scripts/install.sh lab)")


def run(args) -> int:
    check_lab_extra()
    from clipmg.lab import Lab
    from clipmg.lab.server import LabServer, bind

    start = time.perf_counter()
    sock = bind(args.host, args.port)  # a port in use fails before the frames are encoded
    try:
        lab = Lab.open(args.checkpoint, args.metadata, labels=args.labels, split=args.split, subset=args.subset,
                       prompts=args.prompts, image_root=args.image_root, columns=columns_from_args(args),
                       cache_dir=args.cache, use_cache=not args.no_cache, batch_size=args.batch_size,
                       device=args.device, workers=args.workers, skip_missing=args.skip_missing)
    except BaseException:
        sock.close()
        raise
    server = LabServer(lab, args.host, sock=sock)
    features = lab.frames
    how = (f"read from {features.cache_file}" if features.from_cache else
           f"encoded in {features.seconds:.1f} s" + (f", cached in {features.cache_file}" if features.cache_file else ""))
    print(f"clipmg lab: {len(lab.encoded)} frames of {features.source} ({how}); "
          f"{lab.classifier.description}; ready in {time.perf_counter() - start:.1f} s")
    print(f"open {server.url}  (Ctrl-C stops)", flush=True)
    server.serve()
    return 0


def register(sub) -> None:
    add_command(sub, "lab", "a checkpoint in the browser: edit prompts and see the metrics change, "
                            "search frames by text, browse mistakes and clips (lab extra)",
                add_arguments, run)
