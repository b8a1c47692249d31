"""Compare prompt sets on the same frames: `clipmg prompts evaluate`.

The frames are decoded and encoded ONCE (`clipmg.inference.encode_frames`: the model's scoring
features); each prompt set's class embeddings are then built and scored by the model's own rule
(`logits_from_features`), exactly as test.py and `clipmg evaluate` score a checkpoint, whatever
the model (for a hand-crop model, the highest probability over its crops). Writes
``prompts.csv``, ``prompts.md``, ``prompts.json`` and TensorBoard hparams entries (one run per
set under ``tensorboard/``) so the sets compare side by side.

The model is a checkpoint, or (zero-shot, nothing trained) an open_clip model given by name and
pretrained tag or weights file, with the class names of a label file.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.checkpoint import hub_cache_name
from clipmg.errors import DataError
from clipmg.inference import (
    DEFAULT_BATCH_SIZE,
    Classifier,
    EncodedFrames,
    encode_frames,
    image_roots,
)
from clipmg.metrics import compute_metrics
from clipmg.prompts import LearnedPromptSet, PromptSet, build_class_embeddings, load_prompt_set
from clipmg.utils import atomic_write_text, logger, markdown_table

TABLE_COLUMNS = ("prompts", "type", "templates", "top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1",
                 "n_images", "n_clips", "source")
CHECKPOINT_SET = "checkpoint"  # --prompts name of the set stored in the checkpoint


def load_classifier(checkpoint: str | os.PathLike | None = None, model: str | None = None,
                    pretrained: str | None = None, labels=None, device: str = "auto") -> Classifier:
    """A checkpoint (`labels` renames its classes), or an open_clip `model` by name with
    `pretrained` weights (a tag or a file) and the classes of the label file `labels`."""
    if checkpoint is not None and model is not None:
        raise DataError("give either --checkpoint or --model (zero-shot), not both")
    if checkpoint is not None:
        return Classifier.from_checkpoint(checkpoint, device=device, labels=labels)
    if model is None:
        raise DataError("give --checkpoint, or --model (an open_clip model, e.g. ViT-B-32 with --pretrained "
                        "openai) for zero-shot")
    if labels is None:
        raise DataError("zero-shot (--model) needs --labels (Clip_label.csv) for the class names")
    return Classifier.zero_shot(model, pretrained, labels, device=device)


def freeze_all(model: torch.nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()


def prompt_set_logits(classifier: Classifier, prompt_set: PromptSet, encoded: EncodedFrames) -> torch.Tensor:
    """(n, C) logits of the encoded frames against the set's class embeddings, as test.py computes them."""
    with torch.no_grad():
        embeddings = build_class_embeddings(classifier.model, classifier.class_names, prompt_set,
                                            class_ids=classifier.class_ids).float()
    return classifier.logits_from_features(encoded.scoring, embeddings)


def set_kind(prompt_set: PromptSet) -> str:
    if isinstance(prompt_set, LearnedPromptSet):
        return "learned"
    return "descriptions" if prompt_set.descriptions else "templates"


def score_prompt_set(classifier: Classifier, prompt_set: PromptSet, encoded: EncodedFrames) -> dict:
    return metrics_from_logits(prompt_set_logits(classifier, prompt_set, encoded), encoded, classifier.num_classes)


def metrics_from_logits(logits: torch.Tensor, encoded: EncodedFrames, num_classes: int) -> dict:
    """A prompt set's row of the table from its (n, C) logits on the encoded frames (also what
    `clipmg lab` shows, so that the two agree)."""
    targets = torch.from_numpy(encoded.targets)
    metrics = compute_metrics(logits, targets, clip_ids=encoded.clip_ids, num_classes=num_classes)
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, targets).item()
    return metrics


def resolve_prompt_sets(sources: Sequence[str], classifier: Classifier) -> list[tuple[str, str, PromptSet]]:
    """(unique name, source, set) for each --prompts entry; `checkpoint` is the checkpoint's own set."""
    if not sources:
        raise DataError("--prompts needs at least one prompt set (a file, a name in prompts/, or a checkpoint)")
    out, seen = [], {}
    for source in sources:
        if source == CHECKPOINT_SET:
            if classifier.checkpoint is None:
                raise DataError("--prompts checkpoint needs --checkpoint")
            prompt_set, name = classifier.prompt_set, f"checkpoint:{classifier.prompt_set.name}"
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
                         tensorboard: bool = True, classifier: Classifier | None = None,
                         adapt_bn: bool = True) -> dict:
    """Evaluate each prompt set on the same frames, encoded as test.py encodes them (with
    `adapt_bn`, after re-estimating the batch-norm statistics on them). Returns {"table":
    DataFrame, "files": {...}, "n_images", "n_skipped", "seconds", "model"}."""
    columns = columns or cdata.Columns()
    classifier = classifier or load_classifier(checkpoint, model, pretrained, labels, device)
    sets = resolve_prompt_sets(prompts, classifier)  # fail on a bad set before decoding any image
    frames, source = cdata.select_frames(metadata, classifier.label_table, split, subset, columns)
    roots = image_roots(image_root, metadata=metadata, config=classifier.config)
    encoded = encode_frames(classifier, frames, roots, source=str(source), column=columns.path,
                            batch_size=batch_size, workers=workers, skip_missing=skip_missing,
                            adapt_bn=adapt_bn)
    rows, details = [], {}
    for name, origin, prompt_set in sets:
        start = time.perf_counter()
        metrics = score_prompt_set(classifier, prompt_set, encoded)
        logger.info("%s: top1 %.4f (%.2f s)", name, metrics["top1"], time.perf_counter() - start)
        n_templates = prompt_set.n_ctx if isinstance(prompt_set, LearnedPromptSet) else len(prompt_set.templates)
        rows.append({"prompts": name, "type": set_kind(prompt_set), "templates": n_templates,
                     **{k: metrics.get(k, float("nan")) for k in TABLE_COLUMNS[3:10]}, "source": origin})
        details[name] = {**metrics, "source": origin, "prompt_set": prompt_set.to_dict()}
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    out = Path(out_dir) if out_dir is not None else default_out_dir(classifier)
    what = {"model": classifier.description, "frames": str(source), "subset": subset if split is not None else None,
            "n_images": len(encoded), "n_skipped": len(encoded.skipped)}
    files = write_table(table, out, what, details)
    if tensorboard:
        files["tensorboard"] = write_hparams(table, out / "tensorboard")
    return {"table": table, "files": files, **what, "seconds": encoded.seconds}


def default_out_dir(classifier: Classifier) -> Path:
    if classifier.checkpoint is not None and hub_cache_name(classifier.checkpoint):
        return Path("prompt_eval") / hub_cache_name(classifier.checkpoint)
    if classifier.checkpoint is not None:
        return classifier.checkpoint.parent / "eval" / f"prompts_{classifier.checkpoint.name}"
    return Path("prompt_eval") / slug(str(classifier.model.model_config.get("name", "model")))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "set"


def write_table(table: pd.DataFrame, out: Path, what: dict, details: dict) -> dict[str, Path]:
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
