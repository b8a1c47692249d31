"""The model card (`README.md`) of a checkpoint folder, generated from its config.json.

Every writer of checkpoints (the trainer, the linear probe, prompt learning, the open_clip
export) goes through `save_checkpoint`, which writes the card beside config.json in the staging
folder, so a card always describes the weights beside it. The card says only what config.json
holds: the model, the classes, the data and split (with its leakage), the recipe, the metrics
and the split they were measured on, and how to run test.py on it. Its YAML header is what the
Hugging Face Hub reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from clipmg.checkpoint.record import CheckpointRecord, as_record
from clipmg.utils import atomic_write_text

CARD = "README.md"

#: train settings shown in the recipe table, in this order (the full `train` is listed below it)
RECIPE_KEYS = ("epochs", "batch_size", "lr_image", "lr_text", "lr_heads", "weight_decay", "scheduler",
               "warmup", "grad_accum", "grad_clip", "precision", "loss", "contrast", "text_source",
               "logit_adjust_tau", "balanced_sampler", "class_weighting", "focal_gamma", "temperature",
               "learn_temperature", "freeze_image", "freeze_text", "init_from", "init_head", "head",
               "pose_fusion", "hand_crops", "prompts", "hflip", "image_size", "seed", "monitor")
DATA_KEYS = ("metadata", "labels", "image_root", "split", "split_by", "val_fraction", "subject_column")
SPLIT_KEYS = ("by", "source", "rows_train", "rows_val", "clips_train", "clips_val", "clips_on_both_sides",
              "classes_train", "classes_val", "val_fraction_actual", "seed")
METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "balanced_accuracy": "balanced accuracy",
                "macro_f1": "macro-F1", "clip_top1": "clip-level top-1", "clip_top5": "clip-level top-5",
                "loss": "loss", "n_images": "frames", "n_clips": "clips"}


def write_model_card(folder: str | Path, config: CheckpointRecord | Mapping | None = None,
                     hub_repo: str | None = None) -> Path:
    """(Re)write `folder`/README.md from `config` (default: the folder's config.json)."""
    folder = Path(folder)
    if config is None:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    path = folder / CARD
    atomic_write_text(path, model_card(config, name=folder.name, hub_repo=hub_repo))
    return path


def model_card(config: CheckpointRecord | Mapping, name: str = "checkpoint", hub_repo: str | None = None) -> str:
    """The card's Markdown for a checkpoint whose config.json is `config` (or holds that record)."""
    record = as_record(config)
    title = hub_repo or record.model.get("name") or name
    sections = [_front_matter(record), f"# {title}\n",
                "A clipmg checkpoint: micro-gesture classification of video frames. "
                "This card is generated from the checkpoint's `config.json`; it states only what that file "
                "holds.\n",
                _model_section(record), _classes_section(record), _data_section(record),
                _recipe_section(record), _metrics_section(record), _usage_section(record, hub_repo)]
    return "\n".join(section for section in sections if section).rstrip() + "\n"


def _front_matter(record: CheckpointRecord) -> str:
    model = record.model
    tags = ["clipmg", "micro-gesture", "video-frames", model.get("backend") or "model"]
    head = "image-classification" if _has_linear_head(model) else "zero-shot-image-classification"
    lines = ["---", "library_name: clipmg", f"pipeline_tag: {head}", "tags:"] + [f"- {tag}" for tag in tags]
    return "\n".join(lines + ["---", ""])


def _has_linear_head(model: Mapping) -> bool:
    return model.get("backend") == "supervised" or model.get("head") == "linear"


def _model_section(record: CheckpointRecord) -> str:
    model = record.model
    rows = [("name", model.get("name")), ("backend", model.get("backend"))]
    rows += [(key, model.get(key)) for key in ("pretrained", "image_size", "embed_dim", "context_length",
                                               "temperature", "learn_temperature") if key in model]
    inner = model.get("inner") or model.get("backbone")
    if isinstance(inner, Mapping):
        rows.append(("wraps", inner.get("name") or inner.get("backend")))
    preprocess = record.preprocess or model.get("preprocess") or {}
    if preprocess:
        rows.append(("preprocess", f"size {preprocess.get('image_size')}, mean {preprocess.get('mean')}, "
                                   f"std {preprocess.get('std')}, {preprocess.get('interpolation', 'bicubic')}"))
    scoring = ("a linear classifier head over the image embedding" if _has_linear_head(model)
               else "cosine similarity of the image embedding to one text embedding per class (its prompts)")
    prompts = record.prompts or {}
    text = ["## Model\n", f"Classes are scored by {scoring}.\n", _table(("setting", "value"), rows)]
    if prompts.get("templates") and not _has_linear_head(model):
        shown = ", ".join(f"`{t}`" for t in prompts["templates"][:5])
        more = f" and {len(prompts['templates']) - 5} more" if len(prompts["templates"]) > 5 else ""
        text.append(f"\nPrompt templates: {shown}{more}.")
    return "\n".join(text) + "\n"


def _classes_section(record: CheckpointRecord) -> str:
    ids, names = record.class_ids, record.class_names
    if not ids:
        return ""
    rows = list(zip(ids, names))
    return f"## Classes ({len(ids)})\n\n" + _table(("id", "name"), rows) + "\n"


def _data_section(record: CheckpointRecord) -> str:
    train, split = record.train, record.split or {}
    rows = [(key, train[key]) for key in DATA_KEYS if train.get(key) is not None]
    rows += [(f"split {key}", split[key]) for key in SPLIT_KEYS if split.get(key) is not None]
    if not rows and "leakage" not in split:
        return "## Training data\n\nconfig.json records no training data for this checkpoint.\n"
    text = ["## Training data and split\n", _table(("setting", "value"), rows)]
    if "leakage" in split:
        text.append(f"\n**Leakage: {split['leakage']}** of the validation frames come from clips that "
                    "also have training frames (0 means no clip is on both sides).")
    elif rows:
        text.append("\nconfig.json does not record the split's leakage.")
    return "\n".join(text) + "\n"


def _recipe_section(record: CheckpointRecord) -> str:
    train = record.train
    if not train:
        return ""
    rows = [(key, train[key]) for key in RECIPE_KEYS if key in train]
    text = ["## Recipe\n", "As config.json's `train` holds them (learning rates as resolved for the run).\n",
            _table(("setting", "value"), rows)]
    for key in ("prompt_learning", "probe"):
        extra = getattr(record, key)
        if isinstance(extra, Mapping):
            plain = [(k, v) for k, v in extra.items() if not isinstance(v, (Mapping, list))]
            text.append(f"\n{key.replace('_', ' ').capitalize()}:\n\n" + _table(("setting", "value"), plain))
    text.append("\n<details><summary>every train setting (config.json <code>train</code>)</summary>\n\n```json\n"
                + json.dumps(train, indent=2, default=str) + "\n```\n</details>")
    return "\n".join(text) + "\n"


def _metrics_section(record: CheckpointRecord) -> str:
    metrics = record.metrics or {}
    shown = [(METRIC_NAMES.get(key, key), _number(value)) for key, value in metrics.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if not shown:
        return "## Metrics\n\nconfig.json records no metrics for this checkpoint.\n"
    split = record.split or {}
    source = split.get("source") or record.train.get("split")
    where = (f"the validation frames of `{source}`" if source
             else "the validation frames of the run's split (`split.csv` in the run folder)")
    if split.get("by"):
        where += f" (split by {split['by']}, leakage {split.get('leakage', 'not recorded')})"
    epoch = f", at epoch {record.epoch}" if record.epoch is not None else ""
    return f"## Metrics\n\nMeasured on {where}{epoch}.\n\n" + _table(("metric", "value"), shown) + "\n"


def _usage_section(record: CheckpointRecord, hub_repo: str | None) -> str:
    where = f"hf-hub:{hub_repo}" if hub_repo else "path/to/this/folder"
    return _clipmg_usage(where) + _open_clip_usage(record.open_clip, hub_repo)


def _open_clip_usage(export: Mapping | None, hub_repo: str | None) -> str:
    if not isinstance(export, Mapping):
        return ""
    name, weights = export.get("name"), export.get("weights")
    source = f"hf-hub:{hub_repo}" if hub_repo else "local-dir:path/to/this/folder"
    return ("\n### With open_clip\n\nThis folder also holds open_clip's files (clipmg's logit scale is open_clip's "
            "`logit_scale`):\n\n```python\nimport open_clip\n"
            f"open_clip.add_model_config(\"path/to/this/folder/{export.get('config')}\")\n"
            f"model, _, preprocess = open_clip.create_model_and_transforms(\"{name}\", "
            f"pretrained=\"path/to/this/folder/{weights}\")\n"
            f"# or, with the preprocessing of the checkpoint: open_clip.create_model_and_transforms(\"{source}\")\n"
            "```\n")


def _clipmg_usage(where: str) -> str:
    return (
        "## Use\n\n```bash\n"
        f"python test.py --imagepathscsv frames.csv --columnname Path --checkpoint {where}\n"
        f"clipmg evaluate --checkpoint {where} --metadata frames.csv --report report.html\n"
        "```\n\n"
        "`test.py` writes predictions.csv beside the CSV (top-5 classes per frame) and, when the CSV has a "
        "`Class` column, the metrics. In Python: "
        f"`clipmg.Classifier.from_checkpoint(\"{where}\").logits(images)`.\n")


def _number(value) -> str:
    """A metric: 4 decimals."""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _cell(value) -> str:
    """A setting as written in config.json (a learning rate of 1e-05 stays 1e-05)."""
    if value is None:
        return "-"
    text = json.dumps(value, default=str) if isinstance(value, (list, Mapping)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, str], rows) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in rows]
    return "\n".join(lines)
