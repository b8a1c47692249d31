"""Learned prompts (CoOp, Zhou et al. 2022) for the open_clip backend: `clipmg prompts learn`.

N context vectors (n_ctx, width) are learned in place of hand-written template words; the text
of class c is ``[SOT] ctx_1 .. ctx_N <tokens of class_template.format(name)> [EOT]``, run through
the frozen open_clip text transformer (`OpenClipModel.encode_text_embeddings`, open_clip's
encode_text from token embeddings). Both towers, the projections and the temperature stay
frozen; only the context trains, with the class-contrast loss of training (`clipmg.losses`, the
text side = one prompt per class).

As the image tower is frozen, each frame is encoded once (eval transform, no augmentation) and
the epochs run on the cached features: an epoch costs one text-tower pass per batch.

The result is a checkpoint folder like any other (the base model's weights and config.json)
plus ``prompt_learner.safetensors``; its config.json["prompts"] describes the learned set, so
`test.py`, `clipmg predict` and `clipmg evaluate` use it without any flag.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clipmg import data as cdata
from clipmg.checkpoint import save_checkpoint
from clipmg.errors import DataError, ModelError
from clipmg.evaluate import compute_metrics
from clipmg.losses import contrastive_loss
from clipmg.predict import DEFAULT_BATCH_SIZE
from clipmg.prompts import LEARNED_FILE, LearnedPromptSet, PromptSet, load_prompt_set
from clipmg.utils import atomic_write_text, logger, progress

DEFAULT_N_CTX = 16
DEFAULT_CLASS_TEMPLATE = "{}."


def _check_model(model) -> None:
    needed = ("encode_text_embeddings", "eot_positions", "token_embedding", "tokenizer")
    if not all(hasattr(type(model), name) or hasattr(model, name) for name in needed):
        raise ModelError(f"learned prompts need the openclip backend; this model is "
                         f"{getattr(model, 'backend', type(model).__name__)!r}")
    model.token_embedding  # noqa: B018  (raises ModelError for text towers it cannot handle)


class PromptLearner(nn.Module):
    """The learnable context (its only parameter, `ctx`); the model is passed to `forward`, so
    the learner's state is the context alone."""

    def __init__(self, context: torch.Tensor, class_template: str = DEFAULT_CLASS_TEMPLATE,
                 init: str | None = None, descriptions: dict | None = None):
        super().__init__()
        if context.ndim != 2 or context.shape[0] < 1:
            raise ModelError(f"prompt context must be (n_ctx >= 1, width), got {tuple(context.shape)}")
        self.ctx = nn.Parameter(context.detach().clone().float())
        self.template = PromptSet(name="learned", templates=[class_template], descriptions=descriptions or {})
        self.init = init

    @property
    def n_ctx(self) -> int:
        return int(self.ctx.shape[0])

    @classmethod
    def create(cls, model, n_ctx: int = DEFAULT_N_CTX, init: str | None = None, std: float = 0.02,
               seed: int = 0, class_template: str = DEFAULT_CLASS_TEMPLATE,
               descriptions: dict | None = None) -> PromptLearner:
        """Context from the token embeddings of the phrase `init` (n_ctx = its token count), or
        `n_ctx` vectors drawn from N(0, std^2)."""
        _check_model(model)
        embedding = model.token_embedding
        if init:
            tokens = model.tokenizer([init]).to(model.device)
            end = int(model.eot_positions(tokens)[0])
            if end <= 1:
                raise DataError(f"--init {init!r} has no tokens")
            with torch.no_grad():
                context = embedding(tokens)[0, 1:end].float().cpu()
            if n_ctx and n_ctx != context.shape[0]:
                logger.info("context initialised from %r: %d vectors (its tokens), not %d", init,
                            context.shape[0], n_ctx)
        else:
            if n_ctx < 1:
                raise DataError(f"--n-ctx must be at least 1, got {n_ctx}")
            generator = torch.Generator().manual_seed(seed)
            context = torch.randn(n_ctx, embedding.embedding_dim, generator=generator) * std
        return cls(context, class_template, init, descriptions).to(model.device)

    @classmethod
    def from_prompt_set(cls, model, prompt_set: LearnedPromptSet) -> PromptLearner:
        _check_model(model)
        if prompt_set.context is None:
            raise ModelError(f"learned prompt set {prompt_set.name} has no context")
        width = model.token_embedding.embedding_dim
        if prompt_set.context.shape[1] != width:
            raise ModelError(f"learned prompts {prompt_set.name} were learned for a text width of "
                             f"{prompt_set.context.shape[1]} ({prompt_set.model}); this model's is {width}")
        return cls(prompt_set.context, prompt_set.class_template, prompt_set.init,
                   prompt_set.descriptions).to(model.device)

    def to_prompt_set(self, model_name: str | None = None, name: str = "learned") -> LearnedPromptSet:
        return LearnedPromptSet(name=name, templates=list(self.template.templates),
                                descriptions=dict(self.template.descriptions),
                                context=self.ctx.detach().float().cpu().clone(), init=self.init, model=model_name)

    def prompt_embeddings(self, model, class_names: list[str], class_ids: list | None = None):
        """(C, L, width) token embeddings [SOT, ctx, class tokens, EOT, pad] and (C,) EOT positions."""
        class_ids = class_ids or [None] * len(class_names)
        texts = [self.template.texts_for(name, cid)[0] for name, cid in zip(class_names, class_ids)]
        tokens = model.tokenizer(texts).to(model.device)
        eot = model.eot_positions(tokens) + self.n_ctx
        length = tokens.shape[1]
        if int(eot.max()) >= length:
            longest = texts[int(eot.argmax())]
            raise ModelError(f"the prompt for {longest!r} with {self.n_ctx} context vectors is longer than the "
                             f"model's context length {length}; use fewer context vectors (--n-ctx)")
        with torch.no_grad():
            embedded = model.token_embedding(tokens)
        ctx = self.ctx.to(embedded.dtype).unsqueeze(0).expand(len(texts), -1, -1)
        x = torch.cat([embedded[:, :1], ctx, embedded[:, 1:length - self.n_ctx]], dim=1)
        return x, eot

    def forward(self, model, class_names: list[str], class_ids: list | None = None) -> torch.Tensor:
        """(C, D) normalised class embeddings."""
        x, eot = self.prompt_embeddings(model, class_names, class_ids)
        return model.encode_text_embeddings(x, eot, normalize=True).float()


# ------------------------------------------------------------------------------ training
def learn_prompts(out: str | os.PathLike, metadata: str | os.PathLike, *,
                  checkpoint: str | os.PathLike | None = None, model: str | None = None,
                  pretrained: str | None = None, labels=None, split=None, image_root=None,
                  columns: cdata.Columns | None = None, n_ctx: int = DEFAULT_N_CTX, init: str | None = None,
                  class_template: str = DEFAULT_CLASS_TEMPLATE, descriptions: str | None = None,
                  epochs: int = 30, batch_size: int = 32, lr: float = 2e-3, weight_decay: float = 0.0,
                  loss: str = "ce", seed: int = 0, val_fraction: float = 0.2, device: str = "auto",
                  workers: int | None = None, encode_batch_size: int = DEFAULT_BATCH_SIZE,
                  skip_missing: bool = False, tensorboard: bool = True) -> dict:
    """Learn a CoOp context for a frozen model on the training frames; validate each epoch on
    the validation frames against the bare class-name prompt of the same model.

    Frames: `split` (a split CSV: its train and val rows); else the split.csv of the checkpoint's
    run (the frames the model was trained and validated on), else a clip-grouped split of
    `metadata` (written to `out/split.csv`). Writes `out/best` (best validation top-1) and
    `out/last`, checkpoints with the learned prompts, `out/history.csv`, and returns a summary.
    """
    from clipmg.prompt_experiments import (
        default_roots,
        encode_frames,
        freeze_all,
        load_base_model,
        score_prompt_set,
    )

    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise DataError(f"need epochs >= 1, batch size >= 1 and lr > 0 (got {epochs}, {batch_size}, {lr})")
    out = Path(out)
    columns = columns or cdata.Columns()
    torch.manual_seed(seed)
    base = load_base_model(checkpoint, model, pretrained, labels, device)
    freeze_all(base.model)
    described = load_prompt_set(descriptions).descriptions if descriptions else {}
    learner = PromptLearner.create(base.model, n_ctx=n_ctx, init=init, seed=seed, class_template=class_template,
                                   descriptions=described)
    train_frames, val_frames, split_source = _frames(base, metadata, split, columns, seed, val_fraction, out)
    roots = default_roots(metadata, base, image_root)
    encode = {"column": columns.path, "batch_size": encode_batch_size, "workers": workers,
              "skip_missing": skip_missing}
    train = encode_frames(base, train_frames, roots, source=split_source, desc="encode train", **encode)
    val = encode_frames(base, val_frames, roots, source=split_source, desc="encode val", **encode)
    baselines = {"classnames": score_prompt_set(base, PromptSet(), val)}
    if base.checkpoint is not None and base.prompt_set.to_dict() != PromptSet().to_dict():
        baselines[f"checkpoint:{base.prompt_set.name}"] = score_prompt_set(base, base.prompt_set, val)

    num_classes = len(base.class_ids)
    text_labels = torch.arange(num_classes, device=base.device)
    scale = base.model.scale().detach().float()
    optimizer = torch.optim.AdamW(learner.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train.targets) / batch_size)
    total = epochs * steps_per_epoch
    warmup = min(steps_per_epoch, max(1, total // 20))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / total))))
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    history, best, best_state = [], None, None
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    features, targets = train.features.to(base.device), train.targets.to(base.device)
    try:
        for epoch in range(epochs):
            learner.train()
            order = torch.randperm(len(targets), generator=generator).to(base.device)
            losses = []
            for begin in progress(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}"):
                rows = order[begin:begin + batch_size]
                text = learner(base.model, base.class_names, base.class_ids)
                value = contrastive_loss(loss, features[rows], text, scale, targets[rows], text_labels)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                scheduler.step()
                losses.append(value.item())
            metrics = _validate(learner, base, val)
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in
                                                                                   metrics.items()}}
            history.append(record)
            logger.info("epoch %d: train loss %.4f | val top1 %.4f clip_top1 %.4f loss %.4f", epoch + 1,
                        record["train_loss"], metrics["top1"], metrics.get("clip_top1", float("nan")),
                        metrics["loss"])
            if writer is not None:
                writer.add_scalar("train/loss", record["train_loss"], epoch + 1)
                for key, value in metrics.items():
                    writer.add_scalar(f"val/{key}", value, epoch + 1)
            if best is None or metrics["top1"] > best["top1"]:
                best, best_state = {**metrics, "epoch": epoch + 1}, learner.ctx.detach().clone()
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    model_name = base.model.model_config.get("name")
    settings = {"base": base.description, "metadata": str(metadata), "split": split_source, "n_ctx": learner.n_ctx,
                "init": init, "class_template": class_template, "descriptions": descriptions, "epochs": epochs,
                "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "loss": loss, "seed": seed,
                "n_train": len(train.targets), "n_val": len(val.targets)}
    last_metrics = history[-1]
    last = _save(out / "last", learner, base, model_name, settings,
                 {k[4:]: v for k, v in last_metrics.items() if k.startswith("val_")}, baselines, metadata, image_root)
    with torch.no_grad():
        learner.ctx.copy_(best_state)
    best_folder = _save(out / "best", learner, base, model_name, settings, best, baselines, metadata, image_root)
    import pandas as pd

    atomic_write_text(out / "history.csv", pd.DataFrame(history).to_csv(index=False, float_format="%.6f"))
    return {"out": str(out), "best_checkpoint": str(best_folder), "last_checkpoint": str(last), "best": best,
            "last": {k[4:]: v for k, v in last_metrics.items() if k.startswith("val_")}, "baselines": baselines,
            "settings": settings, "seconds": seconds, "encode_seconds": train.seconds + val.seconds}


@torch.no_grad()
def _validate(learner: PromptLearner, base, val) -> dict:
    learner.eval()
    text = learner(base.model, base.class_names, base.class_ids).cpu()
    logits = base.model.scale().detach().float().cpu() * val.features @ text.T
    metrics = compute_metrics(logits, val.targets, clip_ids=val.clip_ids, num_classes=len(base.class_ids))
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, val.targets).item()
    return metrics


def _frames(base, metadata, split, columns, seed: int, val_fraction: float, out: Path):
    """(train frames, val frames, their source)."""
    table = dict(zip(base.class_ids, base.class_names))
    if split is None and base.checkpoint is not None and (base.checkpoint.parent / "split.csv").is_file():
        split = base.checkpoint.parent / "split.csv"
        logger.info("using %s, the split the checkpoint was trained on", split)
    if split is not None:
        frames = cdata.read_split(split, labels=table, columns=columns)
        source = str(split)
    else:
        frames = cdata.read_metadata(metadata, labels=table, columns=columns)
        result = cdata.split_dataset(frames, by="clip", val_fraction=val_fraction, seed=seed)
        out.mkdir(parents=True, exist_ok=True)
        cdata.write_split(result, frames, out / "split.csv")
        frames = cdata.read_split(out / "split.csv", labels=table, columns=columns)
        source = str(out / "split.csv")
    train = frames[frames["split"] == "train"].reset_index(drop=True)
    val = frames[frames["split"] == "val"].reset_index(drop=True)
    if train.empty or val.empty:
        raise DataError(f"{source} leaves {len(train)} training and {len(val)} validation frames; both are needed")
    return train, val, source


def _save(folder: Path, learner: PromptLearner, base, model_name, settings: dict, metrics: dict, baselines: dict,
          metadata, image_root) -> Path:
    prompt_set = learner.to_prompt_set(model_name)
    train = dict(base.config.get("train") or {"metadata": str(metadata), "image_root": image_root})
    config = {"class_ids": base.class_ids, "class_names": base.class_names, "prompts": prompt_set.to_dict(),
              "preprocess": base.preprocess, "train": train, "metrics": metrics,
              "prompt_learning": {**settings, "baselines": baselines}}
    return save_checkpoint(folder, base.model, config,
                           extra_writers=[lambda staging: prompt_set.save(staging / LEARNED_FILE)])


# ---------------------------------------------------------------------------------- CLI
def add_learn_arguments(parser) -> None:
    from clipmg.prompt_experiments import add_model_arguments

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
    parser.add_argument("--loss", default="ce", choices=("ce", "soft_ce", "js"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--no-tensorboard", action="store_true")
    add_model_arguments(parser)


def learn_from_args(args) -> int:
    from clipmg.prompt_experiments import columns_from_args, markdown_table

    summary = learn_prompts(args.out, args.metadata, checkpoint=args.checkpoint, model=args.model,
                            pretrained=args.pretrained, labels=args.labels, split=args.split,
                            image_root=args.image_root, columns=columns_from_args(args), n_ctx=args.n_ctx,
                            init=args.init, class_template=args.class_template, descriptions=args.descriptions,
                            epochs=args.epochs, batch_size=args.train_batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, loss=args.loss, seed=args.seed,
                            val_fraction=args.val_fraction, device=args.device, workers=args.workers,
                            encode_batch_size=args.batch_size, skip_missing=args.skip_missing,
                            tensorboard=not args.no_tensorboard)
    import pandas as pd

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
