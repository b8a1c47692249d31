"""Logits to honest metrics: top-k, balanced accuracy, macro-F1, per-class recall, clip level
(a frame model's frames aggregated per clip by mean logits and by majority vote; a clip model's
own clip predictions).

`compute_metrics` is what training-time validation, `clipmg predict` and `clipmg evaluate` all
report; `write_report` adds the per-class table and the confusion matrix (CSV and PNG) to disk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg.outputs import output_errors
from clipmg.utils import atomic_write_text

#: what validation reports each epoch (`--monitor` chooses one)
VALIDATION_METRICS = ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "clip_top5", "loss")
LOWER_IS_BETTER = frozenset({"loss"})


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    return (topk == targets[:, None]).any(dim=1).float().mean().item()


def clip_level_logits(logits: torch.Tensor, targets: torch.Tensor, clip_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the logits of each clip's frames; a clip's label is its frames' (first) label."""
    codes, uniques = pd.factorize(pd.Series(clip_ids).astype(str))
    codes_t = torch.as_tensor(codes, dtype=torch.long)
    sums = torch.zeros(len(uniques), logits.shape[1], dtype=logits.dtype).index_add_(0, codes_t, logits)
    counts = torch.bincount(codes_t, minlength=len(uniques)).to(logits.dtype)
    first = np.unique(codes, return_index=True)[1]
    return sums / counts[:, None], targets[torch.as_tensor(first)]


def clip_majority_votes(logits: torch.Tensor, targets: torch.Tensor, clip_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """Majority vote of each clip's frames: (clips, C) scores whose arg-max is the class most of
    its frames predict, ties going to the class with the highest mean probability (the votes plus
    half the mean probability); a clip's label is its frames' (first) label."""
    codes, uniques = pd.factorize(pd.Series(clip_ids).astype(str))
    codes_t = torch.as_tensor(codes, dtype=torch.long)
    votes = torch.zeros(len(uniques), logits.shape[1], dtype=torch.float32)
    votes.index_put_((codes_t, logits.argmax(dim=1)), torch.ones(len(codes_t)), accumulate=True)
    mean_probs, clip_targets = clip_level_logits(logits.float().softmax(dim=1), targets, clip_ids)
    return votes + 0.5 * mean_probs, clip_targets


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, prefix: str = "") -> dict:
    """top1, top5, balanced accuracy and macro-F1 of (n, C) logits against class indices.

    Balanced accuracy and macro-F1 are sklearn's (`balanced_accuracy_score`; `f1_score` with
    `labels` the classes present in the targets, `zero_division=0`), computed from one confusion
    matrix: sklearn's import and input checks cost more than a small validation set's scoring.
    """
    counts = confusion_counts(targets.numpy(), logits.argmax(dim=1).numpy(), logits.shape[1])
    support, predicted, correct = counts.sum(axis=1), counts.sum(axis=0), np.diag(counts)
    present = support > 0
    return {
        f"{prefix}top1": topk_accuracy(logits, targets, 1),
        f"{prefix}top5": topk_accuracy(logits, targets, 5),
        f"{prefix}balanced_accuracy": float(np.mean(correct[present] / support[present])) if present.any()
        else float("nan"),
        f"{prefix}macro_f1": float(np.mean(2 * correct[present] / (support + predicted)[present])) if present.any()
        else float("nan"),
    }


def compute_metrics(logits: torch.Tensor, targets: torch.Tensor, clip_ids=None,
                    num_classes: int | None = None) -> dict:
    """Frame-level metrics of class logits against indices; with ``clip_ids`` also clip-level
    ones: `clip_*` of the logits averaged per clip, `clip_majority_*` of the majority vote."""
    logits = logits.float().cpu()
    targets = targets.long().cpu()
    metrics = {"n_images": int(len(targets)), **classification_metrics(logits, targets)}
    if clip_ids is not None:
        clip_logits, clip_targets = clip_level_logits(logits, targets, clip_ids)
        metrics["n_clips"] = int(len(clip_targets))
        metrics.update(classification_metrics(clip_logits, clip_targets, "clip_"))
        votes, _ = clip_majority_votes(logits, targets, clip_ids)
        majority = classification_metrics(votes, clip_targets, "clip_majority_")
        metrics.update({key: value for key, value in majority.items() if not key.endswith("top5")})
    return metrics


def clip_model_metrics(clip_logits: torch.Tensor, clip_targets: torch.Tensor) -> dict:
    """A clip model's own clip predictions: `clip_model_*` metrics and `clip_model_n_clips`."""
    clip_logits, clip_targets = clip_logits.float().cpu(), clip_targets.long().cpu()
    return {"clip_model_n_clips": int(len(clip_targets)),
            **classification_metrics(clip_logits, clip_targets, "clip_model_")}


def per_class_report(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str],
                     class_ids: list[int] | None = None) -> pd.DataFrame:
    """One row per class: support (true frames), recall, and predicted count, precision and F1.

    Recall is empty (NaN) for a class without frames, precision for a class never predicted.
    """
    preds = logits.argmax(dim=1).cpu().numpy()
    y = targets.cpu().numpy()
    labels = np.arange(len(class_names))
    cm = confusion_counts(y, preds, len(class_names))
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    correct = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
        precision = np.where(predicted > 0, correct / np.maximum(predicted, 1), np.nan)
        f1 = np.where(support + predicted > 0, 2 * correct / np.maximum(support + predicted, 1), np.nan)
    report = pd.DataFrame({"class_index": labels, "name": class_names, "support": support, "recall": recall,
                           "predicted": predicted, "precision": precision, "f1": f1})
    if class_ids is not None:
        report.insert(1, "class_id", list(class_ids))
    return report


def confusion(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> np.ndarray:
    return confusion_counts(targets.cpu().numpy(), logits.argmax(dim=1).cpu().numpy(), num_classes)


def confusion_counts(y: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) frame counts: row the true class index, column the predicted one."""
    y, preds = np.asarray(y, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(y * num_classes + preds, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# --------------------------------------------------------------------------- reports
def metrics_summary_lines(metrics: dict) -> list[str]:
    """Frame-level and clip-level figures side by side, as `clipmg predict`/`evaluate` print them."""
    def fmt(value) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    lines = [f"frames: {metrics['n_images']:>6}  top1 {fmt(metrics['top1'])}  top5 {fmt(metrics['top5'])}  "
             f"balanced_accuracy {fmt(metrics['balanced_accuracy'])}  macro_f1 {fmt(metrics['macro_f1'])}"]
    if "clip_top1" in metrics:
        lines.append(f"clips:  {metrics['n_clips']:>6}  top1 {fmt(metrics['clip_top1'])}  "
                     f"top5 {fmt(metrics['clip_top5'])}  balanced_accuracy {fmt(metrics.get('clip_balanced_accuracy'))}  "
                     f"macro_f1 {fmt(metrics.get('clip_macro_f1'))}  (logits averaged over each clip's frames)")
    if "clip_majority_top1" in metrics:
        lines.append(f"clips:  {metrics['n_clips']:>6}  top1 {fmt(metrics['clip_majority_top1'])}  "
                     f"balanced_accuracy {fmt(metrics['clip_majority_balanced_accuracy'])}  "
                     f"macro_f1 {fmt(metrics['clip_majority_macro_f1'])}  (majority vote of the frames)")
    if "clip_model_top1" in metrics:
        lines.append(f"clips:  {metrics['clip_model_n_clips']:>6}  top1 {fmt(metrics['clip_model_top1'])}  "
                     f"top5 {fmt(metrics['clip_model_top5'])}  balanced_accuracy "
                     f"{fmt(metrics['clip_model_balanced_accuracy'])}  macro_f1 {fmt(metrics['clip_model_macro_f1'])}  "
                     "(the clip model: its temporal head over the clip's sampled frames)")
    return lines


def per_class_lines(report: pd.DataFrame) -> list[str]:
    """The per-class recall table (with support), classes without frames last."""
    width = max(12, min(40, int(report["name"].str.len().max() or 0)))
    has_id = "class_id" in report
    lines = [f"{'id':>4}  {'class':<{width}}  {'support':>7}  {'recall':>6}  {'predicted':>9}"]
    for row in report.itertuples(index=False):
        recall = "-" if pd.isna(row.recall) else f"{row.recall:.3f}"
        ident = row.class_id if has_id else row.class_index
        lines.append(f"{ident:>4}  {str(row.name)[:width]:<{width}}  {row.support:>7}  {recall:>6}  "
                     f"{row.predicted:>9}")
    return lines


def plot_confusion(cm: np.ndarray, class_names: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (each row: where a true class's frames went) as a PNG.

    Drawn on a bare Figure, not pyplot: no GUI backend and no global state (PNG renders with Agg).
    """
    from matplotlib.figure import Figure

    path = Path(path)
    n = len(class_names)
    support = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(support > 0, cm / np.maximum(support, 1), 0.0)
    side = max(5.0, 0.32 * n + 3.0)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    labels = [f"{name[:28]} ({count})" for name, count in zip(class_names, support[:, 0])]
    ax.set_xticks(range(n), [name[:28] for name in class_names], rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (frames)")
    if title:
        ax.set_title(title, fontsize=9)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def write_report(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str], paths: dict[str, Path],
                 class_ids: list[int] | None = None, clip_ids=None, extra: dict | None = None,
                 clip_model: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Compute the metrics and write them: `paths` maps "metrics" (JSON), "per_class" (CSV),
    "confusion" (CSV) and "confusion_png" to files. `clip_model`: a clip model's (clip logits,
    clip targets), reported as `clip_model_*`. Returns the metrics (plus `extra`)."""
    num_classes = len(class_names)
    metrics = compute_metrics(logits, targets, clip_ids=clip_ids, num_classes=num_classes)
    if clip_model is not None:
        metrics.update(clip_model_metrics(*clip_model))
    report = per_class_report(logits, targets, class_names, class_ids)
    cm = confusion(logits, targets, num_classes)
    kept = f"{paths['metrics']} (written last) keeps its earlier content, if any"
    with output_errors(paths["metrics"], kept):
        for path in paths.values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        report.to_csv(paths["per_class"], index=False, float_format="%.6g")
        tick = [f"{cid}: {name}" for cid, name in zip(class_ids or range(num_classes), class_names)]
        pd.DataFrame(cm, index=pd.Index(tick, name="true \\ predicted"), columns=tick).to_csv(paths["confusion"])
        plot_confusion(cm, tick, paths["confusion_png"],
                       title=f"{metrics['n_images']} frames, top1 {metrics['top1']:.3f}, "
                             f"balanced accuracy {metrics['balanced_accuracy']:.3f}")
        metrics = {**metrics, **(extra or {})}
        document = {**metrics, "per_class": report.to_dict(orient="records"),
                    "files": {k: str(v) for k, v in paths.items()}}
        atomic_write_text(paths["metrics"], json.dumps(_json_ready(document), indent=2) + "\n")
    return metrics
