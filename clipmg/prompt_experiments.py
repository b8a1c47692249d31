"""Compare prompt sets on the same frames: `clipmg prompts evaluate`.

The frames are decoded and encoded ONCE (with predict's image pipeline: `score_images` on an
identity classifier, whose logits are the normalised image features); then each prompt set's
class embeddings are built and scored as ``scale * features @ class_embeddings.T``, exactly as
`clipmg evaluate` scores a checkpoint. Writes ``prompts.csv``, ``prompts.md``, ``prompts.json``
and TensorBoard hparams entries (one run per set under ``tensorboard/``) so the sets compare
side by side.

The model is a checkpoint, or (zero-shot, nothing trained) an open_clip model given by name and
pretrained tag or weights file, with the class names of a label file.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.checkpoint import load_checkpoint, resolve_checkpoint
from clipmg.errors import DataError, ImageError
from clipmg.evaluate import compute_metrics
from clipmg.predict import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    class_names_for,
    score_images,
    training_image_roots,
)
from clipmg.prompts import LearnedPromptSet, PromptSet, build_class_embeddings, load_prompt_set
from clipmg.utils import atomic_write_text, logger, progress, resolve_device

TABLE_COLUMNS = ("prompts", "type", "templates", "top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1",
                 "n_images", "n_clips", "source")
CHECKPOINT_SET = "checkpoint"  # --prompts name of the set stored in the checkpoint


# ------------------------------------------------------------------------------ the model
@dataclass
class BaseModel:
    """A model to put prompts on, with its classes (ids from the label file or checkpoint)."""

    model: torch.nn.Module
    class_ids: list[int]
    class_names: list[str]
    preprocess: dict
    device: torch.device
    config: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    prompt_set: PromptSet = field(default_factory=PromptSet)  # the checkpoint's own set

    @property
    def description(self) -> str:
        if self.checkpoint is not None:
            return str(self.checkpoint)
        cfg = getattr(self.model, "model_config", {})
        return f"{cfg.get('name')} (pretrained {cfg.get('pretrained')}, zero-shot)"


def load_base_model(checkpoint: str | os.PathLike | None = None, model: str | None = None,
                    pretrained: str | None = None, labels=None, device: str = "auto") -> BaseModel:
    """A checkpoint (`labels` renames its classes), or an open_clip `model` by name with
    `pretrained` weights (a tag or a file) and the classes of the label file `labels`."""
    device = resolve_device(device)
    if checkpoint is not None and model is not None:
        raise DataError("give either --checkpoint or --model (zero-shot), not both")
    if checkpoint is not None:
        folder = resolve_checkpoint(checkpoint)
        net, config = load_checkpoint(folder, device)
        ids = [int(i) for i in config["class_ids"]]
        names = class_names_for(ids, list(config["class_names"]), labels, folder)
        return BaseModel(net, ids, names, dict(config.get("preprocess") or net.preprocess_config), device, config,
                         folder, PromptSet.from_dict(config.get("prompts") or {}, folder=folder))
    if model is None:
        raise DataError("give --checkpoint, or --model (an open_clip model, e.g. ViT-B-32 with --pretrained "
                        "openai) for zero-shot")
    if labels is None:
        raise DataError("zero-shot (--model) needs --labels (Clip_label.csv) for the class names")
    from clipmg.models import create_model

    name = model if model.startswith(("openclip:", "hybrid")) else f"openclip:{model}"
    if not pretrained:
        logger.warning("%s without --pretrained has random weights: its zero-shot figures are chance", name)
    net = create_model(name, pretrained=pretrained).to(device).eval()
    table = cdata.load_labels(labels)
    return BaseModel(net, list(table), list(table.values()), dict(net.preprocess_config), device)


def freeze_all(model: torch.nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()


# ----------------------------------------------------------------------------- the frames
def default_roots(metadata, base: BaseModel, image_root=None) -> list[Path]:
    if image_root is not None:
        return [Path(image_root)]
    return list(dict.fromkeys([Path(cdata.default_image_root(metadata)), *training_image_roots(base.config)]))


@dataclass
class FrameFeatures:
    """Normalised image features of the frames that could be read, with their truth."""

    features: torch.Tensor  # (n, D) float32, CPU
    targets: torch.Tensor  # (n,) class indices
    clip_ids: np.ndarray  # (n,) video ids
    frames: pd.DataFrame  # the n frames
    n_skipped: int = 0
    seconds: float = 0.0


def _embed_dim(model) -> int:
    dim = getattr(model, "model_config", {}).get("embed_dim")
    if dim:
        return int(dim)
    with torch.no_grad():
        return int(model.encode_text(["a"]).shape[-1])


def encode_frames(base: BaseModel, frames: pd.DataFrame, roots: Sequence[Path], *, source: str,
                  column: str = "Path", batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
                  skip_missing: bool = False, desc: str = "encode images") -> FrameFeatures:
    """Decode and encode each frame once (predict's pipeline, eval transform)."""
    dim = _embed_dim(base.model)
    identity = Classifier(model=base.model, class_ids=list(range(dim)), class_names=[""] * dim,
                          class_embeddings=torch.eye(dim, device=base.device), scale=torch.tensor(1.0, device=base.device),
                          preprocess=base.preprocess, device=base.device, config=base.config,
                          checkpoint=base.checkpoint)
    start = time.perf_counter()
    with progress(total=len(frames), desc=desc, unit="img") as bar:
        scored = score_images(identity, frames["path"].to_numpy(), frames["row"].to_numpy(), roots, source=source,
                              column=column, batch_size=batch_size, workers=workers, skip_missing=skip_missing,
                              bar=bar)
    ok = scored.ok
    if not ok.any():
        raise ImageError(f"none of the {len(frames)} images of {source} could be read (first: {scored.reasons[0][2]})")
    index_of = {cid: i for i, cid in enumerate(base.class_ids)}
    kept = frames[ok].reset_index(drop=True)
    targets = torch.tensor([index_of[int(c)] for c in kept["class_id"]], dtype=torch.long)
    return FrameFeatures(features=scored.logits[torch.from_numpy(ok)].contiguous(), targets=targets,
                         clip_ids=kept["video_id"].to_numpy(), frames=kept, n_skipped=int((~ok).sum()),
                         seconds=time.perf_counter() - start)


# ------------------------------------------------------------------------------ scoring
def prompt_set_logits(base: BaseModel, prompt_set: PromptSet, features: torch.Tensor) -> torch.Tensor:
    """(n, C) logits of features against the set's class embeddings, as predict computes them."""
    with torch.no_grad():
        embeddings = build_class_embeddings(base.model, base.class_names, prompt_set,
                                            class_ids=base.class_ids).float().cpu()
        scale = base.model.scale().detach().float().cpu()
    return scale * features @ embeddings.T


def set_kind(prompt_set: PromptSet) -> str:
    if isinstance(prompt_set, LearnedPromptSet):
        return "learned"
    return "descriptions" if prompt_set.descriptions else "templates"


def score_prompt_set(base: BaseModel, prompt_set: PromptSet, encoded: FrameFeatures) -> dict:
    logits = prompt_set_logits(base, prompt_set, encoded.features)
    metrics = compute_metrics(logits, encoded.targets, clip_ids=encoded.clip_ids, num_classes=len(base.class_ids))
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, encoded.targets).item()
    return metrics


def resolve_prompt_sets(sources: Sequence[str], base: BaseModel) -> list[tuple[str, str, PromptSet]]:
    """(unique name, source, set) for each --prompts entry; `checkpoint` is the checkpoint's own set."""
    if not sources:
        raise DataError("--prompts needs at least one prompt set (a file, a name in prompts/, or a checkpoint)")
    out, seen = [], {}
    for source in sources:
        if source == CHECKPOINT_SET:
            if base.checkpoint is None:
                raise DataError("--prompts checkpoint needs --checkpoint")
            prompt_set, name = base.prompt_set, f"checkpoint:{base.prompt_set.name}"
        else:
            prompt_set = load_prompt_set(source)
            name = prompt_set.name
            if isinstance(prompt_set, LearnedPromptSet) and Path(source).exists():
                folder = Path(source) if Path(source).is_dir() else Path(source).parent
                name = f"learned:{folder.parent.name}/{folder.name}"
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", str(source), prompt_set))
    return out


def evaluate_prompt_sets(prompts: Sequence[str], metadata: str | os.PathLike, *,
                         checkpoint: str | os.PathLike | None = None, model: str | None = None,
                         pretrained: str | None = None, labels=None, split=None, subset: str = "val",
                         out_dir: str | os.PathLike | None = None, image_root=None,
                         columns: cdata.Columns | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                         device: str = "auto", workers: int | None = None, skip_missing: bool = False,
                         tensorboard: bool = True, base: BaseModel | None = None) -> dict:
    """Evaluate each prompt set on the same frames. Returns {"table": DataFrame, "files": {...},
    "n_images", "n_skipped", "seconds", "model"}."""
    columns = columns or cdata.Columns()
    base = base or load_base_model(checkpoint, model, pretrained, labels, device)
    sets = resolve_prompt_sets(prompts, base)  # fail on a bad set before decoding any image
    frames, source = cdata.select_frames(metadata, dict(zip(base.class_ids, base.class_names)), split, subset, columns)
    encoded = encode_frames(base, frames, default_roots(metadata, base, image_root), source=str(source),
                            column=columns.path, batch_size=batch_size, workers=workers, skip_missing=skip_missing)
    rows, details = [], {}
    for name, origin, prompt_set in sets:
        start = time.perf_counter()
        metrics = score_prompt_set(base, prompt_set, encoded)
        logger.info("%s: top1 %.4f (%.2f s)", name, metrics["top1"], time.perf_counter() - start)
        n_templates = prompt_set.n_ctx if isinstance(prompt_set, LearnedPromptSet) else len(prompt_set.templates)
        rows.append({"prompts": name, "type": set_kind(prompt_set), "templates": n_templates,
                     **{k: metrics.get(k, float("nan")) for k in TABLE_COLUMNS[3:10]}, "source": origin})
        details[name] = {**metrics, "source": origin, "prompt_set": prompt_set.to_dict()}
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    out = Path(out_dir) if out_dir is not None else default_out_dir(base)
    what = {"model": base.description, "frames": str(source), "subset": subset if split is not None else None,
            "n_images": len(encoded.frames), "n_skipped": encoded.n_skipped}
    files = write_table(table, out, what, details)
    if tensorboard:
        files["tensorboard"] = write_hparams(table, out / "tensorboard")
    return {"table": table, "files": files, **what, "seconds": encoded.seconds}


def default_out_dir(base: BaseModel) -> Path:
    if base.checkpoint is not None:
        return base.checkpoint.parent / "eval" / f"prompts_{base.checkpoint.name}"
    return Path("prompt_eval") / slug(str(base.model.model_config.get("name", "model")))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "set"


# ------------------------------------------------------------------------------- output
def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(table: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    columns = list(columns or [c for c in table.columns if c != "source"])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in table[columns].itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write_table(table: pd.DataFrame, out: Path, what: dict, details: dict) -> dict[str, Path]:
    import json

    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "prompts.csv", "markdown": out / "prompts.md", "json": out / "prompts.json"}
    atomic_write_text(files["csv"], table.to_csv(index=False, float_format="%.6f", lineterminator="\n"))
    header = (f"Prompt sets on {what['n_images']} frames of {what['frames']}"
              + (f" ({what['subset']})" if what.get("subset") else "") + f"; model {what['model']}. "
              "top1/top5/balanced_accuracy/macro_f1 are frame level; clip_top1 averages each clip's logits.\n\n")
    atomic_write_text(files["markdown"], header + markdown_table(table) + "\n")
    document = {**what, "sets": {k: {kk: (None if isinstance(vv, float) and math.isnan(vv) else vv)
                                     for kk, vv in v.items()} for k, v in details.items()}}
    atomic_write_text(files["json"], json.dumps(document, indent=2, default=str) + "\n")
    return files


def write_hparams(table: pd.DataFrame, logdir: Path) -> Path:
    """One TensorBoard run per set (hparams: name, type, templates; metrics: the table's)."""
    from torch.utils.tensorboard import SummaryWriter

    logdir.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(str(logdir)) as writer:
        for row in table.to_dict(orient="records"):
            hparams = {"prompts": row["prompts"], "type": row["type"], "templates": int(row["templates"])}
            metrics = {f"hparam/{k}": float(row[k]) for k in ("top1", "top5", "balanced_accuracy", "macro_f1",
                                                              "clip_top1") if not math.isnan(float(row[k]))}
            writer.add_hparams(hparams, metrics, run_name=slug(row["prompts"]))
    return logdir


# ---------------------------------------------------------------------------------- CLI
def add_model_arguments(parser) -> None:
    group = parser.add_argument_group("model (one of)")
    group.add_argument("--checkpoint", help="checkpoint folder, or a run folder (its best/)")
    group.add_argument("--model", help="zero-shot: an open_clip model by name (e.g. ViT-B-32), no training")
    group.add_argument("--pretrained", help="with --model: open_clip pretrained tag (e.g. openai) or weights file")
    parser.add_argument("--labels", help="Clip_label.csv: class names (required with --model; with --checkpoint it "
                                         "renames the classes, ids must match)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes (default as predict)")
    parser.add_argument("--image-root", help="folder the Path column is relative to (default training/ beside "
                                             "the metadata)")
    parser.add_argument("--skip-missing", action="store_true", help="leave out missing or unreadable images")
    for column, default in (("path", "Path"), ("class", "Class"), ("video", "Video ID"),
                            ("frame", "Frame ID"), ("caption", "Caption")):
        parser.add_argument(f"--{column}-column", default=default, help=f"column name (default {default!r})")


def columns_from_args(args) -> cdata.Columns:
    return cdata.Columns(path=args.path_column, class_=args.class_column, video=args.video_column,
                         frame=args.frame_column, caption=args.caption_column)


def add_evaluate_arguments(parser) -> None:
    parser.add_argument("--metadata", required=True, help="train.xlsx or a CSV of frames (or the split CSV)")
    parser.add_argument("--split", help="split CSV (from `clipmg split` or a run's split.csv)")
    parser.add_argument("--subset", default="val", choices=("train", "val", "all"), help="frames of --split")
    parser.add_argument("--prompts", nargs="+", required=True,
                        help="prompt sets: YAML/text files, names in prompts/ (classnames, photo, "
                             "press_conference, descriptions), a learned-prompt checkpoint folder or its "
                             "prompt_learner.safetensors, or 'checkpoint' (the checkpoint's own set)")
    parser.add_argument("--out", help="folder for prompts.csv/.md/.json and tensorboard/ "
                                      "(default <run>/eval/prompts_<checkpoint>)")
    parser.add_argument("--no-tensorboard", action="store_true")
    add_model_arguments(parser)


def evaluate_from_args(args) -> int:
    result = evaluate_prompt_sets(args.prompts, args.metadata, checkpoint=args.checkpoint, model=args.model,
                                  pretrained=args.pretrained, labels=args.labels, split=args.split,
                                  subset=args.subset, out_dir=args.out, image_root=args.image_root,
                                  columns=columns_from_args(args), batch_size=args.batch_size, device=args.device,
                                  workers=args.workers, skip_missing=args.skip_missing,
                                  tensorboard=not args.no_tensorboard)
    print(f"{len(result['table'])} prompt sets on {result['n_images']} frames of {result['frames']}"
          + (f" ({result['subset']})" if result["subset"] else "") + f", model {result['model']}"
          + (f"; {result['n_skipped']} images skipped" if result["n_skipped"] else ""))
    print(markdown_table(result["table"]))
    print("wrote " + ", ".join(str(p) for p in result["files"].values()))
    return 0
