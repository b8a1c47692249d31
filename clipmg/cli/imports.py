"""`clipmg import`: the original project's CLIPModel state dict as a clipmg checkpoint folder; and
the same conversion on the fly when --checkpoint or --init-from is given such a file."""

from __future__ import annotations

import sys
from pathlib import Path

from clipmg.jobs.imports import ORIGINAL_TEMPERATURE, checkpoint_from_file, convert_original


def folder_for(checkpoint: str, labels: str | None) -> str:
    """`checkpoint` itself, or for a file the clipmg folder it converts to (said on stderr)."""
    if not isinstance(checkpoint, str) or not Path(checkpoint).is_file():
        return checkpoint
    folder, converted = checkpoint_from_file(checkpoint, labels)
    what = "converted" if converted else "using"
    print(f"{checkpoint} is the original project's CLIPModel state dict: {what} {folder} (pass that folder "
          "next time)", file=sys.stderr)
    return str(folder)


def run(args) -> int:
    folder = convert_original(args.source, args.out, args.labels, image=args.image_encoder, text=args.text_encoder,
                              prompts=args.prompts, temperature=args.temperature, image_size=args.image_size)
    print(f"wrote {folder}: classify with `python test.py --checkpoint {folder} ...`, fine-tune with "
          f"`clipmg train --init-from {folder} ...`")
    return 0


def register(sub) -> None:
    p = sub.add_parser("import", help="convert the original project's CLIPModel state dict into a checkpoint folder",
                       description="Reads a .pt/.pth/.bin/.safetensors state dict without running code "
                                   "(torch.load weights_only=True) and writes a clipmg hybrid checkpoint folder.")
    p.add_argument("--from", dest="source", required=True, help="the state dict file (e.g. best_0.81.pth)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--labels", required=True, help="Clip_label.csv: the classes the checkpoint will classify")
    p.add_argument("--image-encoder", help="timm:NAME of the image encoder (default: guessed from the tensors)")
    p.add_argument("--text-encoder", help="hf:NAME_OR_FOLDER of the text encoder, for its config and tokenizer "
                                          "(default hf:distilbert-base-uncased)")
    p.add_argument("--prompts", help="prompt set (default: the bare class names, as the original's captions)")
    p.add_argument("--temperature", type=float, default=ORIGINAL_TEMPERATURE,
                   help=f"the original's temperature (default {ORIGINAL_TEMPERATURE}, the simple-CLIP recipe's)")
    p.add_argument("--image-size", type=int, help="input size (default: the timm model's)")
    p.set_defaults(func=run)
