"""`clipmg embed`: a TensorBoard projector run and a 2-D map of a checkpoint's embeddings."""

from __future__ import annotations

from clipmg.cli.options import (
    add_checkpoint_arguments,
    add_column_arguments,
    add_frames_arguments,
    add_image_root_argument,
    add_runtime_arguments,
    columns_from_args,
)
from clipmg.jobs.embed import DEFAULT_MAX_IMAGES, embed_checkpoint
from clipmg.outputs import check_output_file, check_output_folder
from clipmg.visual import DEFAULT_TAG, DEFAULT_THUMB_SIZE, MAP_METHODS


def run(args) -> int:
    check_output_folder(args.logdir, "--logdir")  # before any image is read
    if args.map_out:
        check_output_file(args.map_out, "--map-out")
    columns = columns_from_args(args)
    summary = embed_checkpoint(args.checkpoint, args.metadata, args.logdir, labels=args.labels, split=args.split,
                               subset=args.subset, max_images=args.max_images, per_class=args.per_class,
                               seed=args.seed, image_root=args.image_root, columns=columns, prompts=args.prompts,
                               batch_size=args.batch_size, device=args.device, workers=args.workers,
                               skip_missing=args.skip_missing, tag=args.tag, global_step=args.step,
                               thumb_size=args.thumb_size, map_method=None if args.map == "none" else args.map,
                               map_path=args.map_out)
    per_class = summary["per_class"]
    print(f"embedded {summary['n_images']} of {summary['n_frames']} frames of {summary['source']} "
          f"({len(per_class)} classes, {min(per_class.values())}..{max(per_class.values())} frames each) "
          f"and {summary['n_prompts']} class prompts, {summary['dim']}-d, in {summary['seconds']:.1f} s; "
          f"top-1 on these frames {summary['top1']:.3f}")
    if summary["n_skipped"]:
        print(f"left out {summary['n_skipped']} unreadable or missing images, e.g. {summary['skipped'][0]}")
    print(f"projector run: {summary['logdir']} (embedding {summary['tensor_name']})")
    if summary["map"]:
        print(f"2-D map: {summary['map']}")
    print(f"view it: tensorboard --logdir {summary['logdir']}  then open http://localhost:6006/#projector")
    return 0


def register(sub) -> None:
    p = sub.add_parser("embed", help="TensorBoard projector run and 2-D map of image and prompt embeddings")
    add_checkpoint_arguments(p)
    add_frames_arguments(p, "train.xlsx or a CSV of frames with their classes")
    p.add_argument("--logdir", default="runs/embed", help="TensorBoard log folder to write (default runs/embed)")
    p.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES,
                   help=f"at most this many frames, stratified by class (default {DEFAULT_MAX_IMAGES}; 0: all)")
    p.add_argument("--per-class", type=int, default=None, help="at most this many frames of each class")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of t-SNE (default 0)")
    p.add_argument("--map", default="pca", choices=(*MAP_METHODS, "none"),
                   help="static 2-D map PNG: pca (default), tsne (needs scikit-learn) or none")
    p.add_argument("--map-out", help="PNG file of the map (default <logdir>/embedding_map_<method>.png)")
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"name of the embedding in the projector (default {DEFAULT_TAG})")
    p.add_argument("--step", type=int, default=None, help="global step to log at (default: the checkpoint's epoch)")
    p.add_argument("--thumb-size", type=int, default=DEFAULT_THUMB_SIZE,
                   help=f"sprite thumbnail side in pixels (default {DEFAULT_THUMB_SIZE}; 0: no sprite)")
    add_image_root_argument(p)
    p.add_argument("--prompts", help="prompt set (file or name) replacing the checkpoint's")
    add_runtime_arguments(p)
    add_column_arguments(p)
    p.set_defaults(func=run)
