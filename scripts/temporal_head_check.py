"""Can a temporal head read the order of a clip's frames from a frame model's embeddings?

A diagnostic, not a comparison row: a frame checkpoint encodes the frames of a motion demo set
once (frozen), then each temporal head (mean, attention, transformer) alone is trained on the
training clips' frame embeddings (8 frames in Frame ID order, cross-entropy against the
checkpoint's class prompts, full batch, AdamW) and scored on held-out clips (every 5th clip).

    python scripts/temporal_head_check.py --checkpoint runs/frame/best --out runs/head-check \
        [--clips 400 --seed 1 --steps 400]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from clipmg.data import clip_table, load_labels, read_metadata
from clipmg.inference import Classifier, encode_frames
from clipmg.metrics import classification_metrics
from clipmg.models import TEMPORAL_HEADS, compose_model
from clipmg.synthetic import make_demo_data
from clipmg.utils import set_progress

FRAMES_PER_CLIP = 8


def clip_embeddings(encoded, classifier: Classifier, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    frames = encoded.frames[encoded.frames["part"] == part]
    table = clip_table(frames)
    features = torch.stack([encoded.scoring[frames.index.to_numpy()[positions]] for positions in table["positions"]])
    targets = torch.tensor([classifier.class_ids.index(int(c)) for c in table["class_id"]])
    return features, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a frame model's checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="folder for the generated motion data")
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    set_progress(False)
    torch.manual_seed(args.seed)
    classifier = Classifier.from_checkpoint(args.checkpoint, device="cpu")
    data = make_demo_data(args.out, classes=args.classes, clips=args.clips, frames_per_clip=FRAMES_PER_CLIP, size=64,
                          seed=args.seed, motion=True)
    frames = read_metadata(data["metadata"], labels=load_labels(data["labels"]))
    codes = frames["video_id"].astype("category").cat.codes.to_numpy()
    frames["part"] = np.where(codes % 5 == 0, "val", "train")
    encoded = encode_frames(classifier, frames, [Path(data["image_root"])], workers=0)
    train, val = clip_embeddings(encoded, classifier, "train"), clip_embeddings(encoded, classifier, "val")
    print(f"{len(train[1])} training clips, {len(val[1])} held-out clips, {args.classes} classes")
    model = classifier.model
    for temporal in TEMPORAL_HEADS:
        clip_model = compose_model(model, clip_frames=FRAMES_PER_CLIP, temporal=temporal)
        params = list(clip_model.head.parameters())
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01) if params else None
        for _ in range(args.steps if optimizer else 0):
            clip_model.head.train()
            logits = model.logits_from_features(clip_model.clip_features(train[0]), classifier.class_embeddings)
            loss = torch.nn.functional.cross_entropy(logits, train[1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        clip_model.head.eval()
        with torch.no_grad():
            for part, (features, targets) in (("train", train), ("held-out", val)):
                logits = model.logits_from_features(clip_model.clip_features(features), classifier.class_embeddings)
                metrics = classification_metrics(logits, targets)
                print(f"{temporal:<12} {part:<9} top1 {metrics['top1']:.3f}  balanced accuracy "
                      f"{metrics['balanced_accuracy']:.3f}")


if __name__ == "__main__":
    main()
