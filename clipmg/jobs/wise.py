"""WiSE-FT (`clipmg wise`): weight-space interpolation between two checkpoints of one architecture,
typically a start (pretrained, zero-shot, or an `--init-from` source) and its fine-tune.

Every floating tensor of the state dict, buffers such as BatchNorm running statistics included,
becomes `(1 - alpha) * start + alpha * fine_tuned` (integer buffers are taken from the nearer
end); alpha 0 is the start, 1 the fine-tune. The result is a normal checkpoint folder with the
fine-tune's config (classes, prompts, preprocessing) and a `wise` entry saying how it was made.
A sweep evaluates each alpha on a split's frames with `evaluate_checkpoint` and keeps the best.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from clipmg.checkpoint import (
    CONFIG,
    TRAINER_STATE,
    WEIGHTS,
    CheckpointRecord,
    load_checkpoint_folder,
    resolve_checkpoint,
    save_checkpoint,
)
from clipmg.errors import CheckpointError, DataError
from clipmg.inference import Classifier, class_names_for, evaluate_checkpoint
from clipmg.metrics import LOWER_IS_BETTER, VALIDATION_METRICS
from clipmg.prompts import PromptSet
from clipmg.utils import atomic_write_text, logger, markdown_table

# Settings that say where a model's weights came from, not its architecture.
PROVENANCE_KEYS = frozenset({"pretrained", "image_pretrained", "text_pretrained", "temperature",
                             "learn_temperature", "dropout"})
SWEEP_COLUMNS = ("alpha", "top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1", "n_images")


def parse_alphas(text: str) -> list[float]:
    """`0.5`, `0,0.3,0.5` or a sweep `start:stop:step` (both ends included): values in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = int(round((stop - start) / step))
            alphas = [round(start + i * step, 10) for i in range(count + 1)]
        else:
            alphas = [float(v) for v in text.split(",")]
    except ValueError:
        raise DataError(f"--alpha {text!r}: expected a number, a list 0,0.5,1 or a sweep start:stop:step "
                        "(e.g. 0:1:0.1)") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise DataError(f"--alpha {text!r}: every alpha must be in [0, 1]")
    return alphas


def architecture(model_config):
    """A model_config without the settings that only say where its weights came from."""
    if isinstance(model_config, dict):
        return {k: architecture(v) for k, v in model_config.items() if k not in PROVENANCE_KEYS}
    return model_config


def _kind(record: CheckpointRecord) -> str:
    model = record.model
    head = model.get("backend") == "supervised"
    return f"{model.get('name')} {'with a linear class head' if head else 'scored against class prompts'}"


def check_same_architecture(start: Path, start_record: CheckpointRecord, start_state: dict,
                            tuned: Path, tuned_record: CheckpointRecord, tuned_state: dict) -> None:
    """CheckpointError unless the two checkpoints have one architecture and parameter shapes."""
    a, b = architecture(start_record.model), architecture(tuned_record.model)
    if a != b:
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        hint = ""
        if (start_record.model.get("backend") == "supervised") != (tuned_record.model.get("backend") == "supervised"):
            hint = (" One has a linear class head and the other not: interpolate the fine-tune with a start of "
                    "the same kind, e.g. the linear probe of the start (`clipmg probe --checkpoint START`, a "
                    "tower with a linear head).")
        raise CheckpointError(f"WiSE-FT interpolates two checkpoints of one architecture; {start} is {_kind(start_record)}"
                              f" and {tuned} is {_kind(tuned_record)} (model settings that differ: "
                              f"{', '.join(differ)}).{hint}")
    shapes_a = {k: tuple(v.shape) for k, v in start_state.items()}
    shapes_b = {k: tuple(v.shape) for k, v in tuned_state.items()}
    if shapes_a != shapes_b:
        differ = sorted(k for k in set(shapes_a) | set(shapes_b) if shapes_a.get(k) != shapes_b.get(k))
        raise CheckpointError(f"WiSE-FT: the weights of {start} and {tuned} do not have the same parameters and "
                              f"shapes ({len(differ)} differ, e.g. {differ[:3]}); they are not one architecture")


def interpolate_states(start: dict, tuned: dict, alpha: float) -> dict:
    """(1 - alpha) * start + alpha * tuned for floating tensors; others from the nearer end."""
    out = {}
    for key, a in start.items():
        b = tuned[key]
        if a.is_floating_point():
            out[key] = (a.float() * (1.0 - alpha) + b.float() * alpha).to(a.dtype)
        else:
            out[key] = (a if alpha < 0.5 else b).clone()
    return out


class WiseEndpoints:
    """The two checkpoints, loaded once; `model_at(alpha)` is the fine-tune's model with the
    interpolated weights."""

    def __init__(self, start: str | os.PathLike, tuned: str | os.PathLike, device: str = "cpu"):
        self.start, self.tuned = resolve_checkpoint(start), resolve_checkpoint(tuned)
        start_model, self.start_record = load_checkpoint_folder(self.start)
        self.model, self.record = load_checkpoint_folder(self.tuned, device)
        self.start_state = {k: v.detach().cpu().clone() for k, v in start_model.state_dict().items()}
        self.tuned_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        del start_model
        check_same_architecture(self.start, self.start_record, self.start_state, self.tuned, self.record,
                                self.tuned_state)

    def model_at(self, alpha: float):
        self.model.load_state_dict(interpolate_states(self.start_state, self.tuned_state, alpha))
        return self.model.eval()

    def classifier(self, alpha: float, labels=None) -> Classifier:
        class_ids = [int(i) for i in self.record.class_ids]
        names = class_names_for(class_ids, list(self.record.class_names), labels, self.tuned)
        prompts = PromptSet.from_dict(self.record.prompts or {}, self.tuned)
        return Classifier.from_model(self.model_at(alpha), class_ids, names, prompts,
                                     preprocess=self.record.preprocess, config=self.record.to_json_dict())

    def save(self, alpha: float, out: str | os.PathLike, metrics: dict | None = None,
             sweep: str | None = None) -> Path:
        record = dataclasses.replace(self.record, metrics=metrics or {},
                                     wise={"from": str(self.start), "to": str(self.tuned), "alpha": alpha,
                                           **({"sweep": sweep} if sweep else {})})
        return save_checkpoint(out, self.model_at(alpha), record, extra_writers=[_copy_other_files(self.tuned)])


def _copy_other_files(source: Path):
    """A checkpoint writer copying what else the fine-tune's folder holds (e.g. a learned prompt
    context), but not its weights, config or trainer state."""

    def write(staging: Path) -> None:
        for item in source.iterdir():
            if item.name in (WEIGHTS, CONFIG, TRAINER_STATE) or (staging / item.name).exists():
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)

    return write


def wise_checkpoint(start, tuned, alpha: float, out, device: str = "cpu") -> Path:
    """The checkpoint `(1 - alpha) * start + alpha * tuned`, written to `out`."""
    return WiseEndpoints(start, tuned, device).save(alpha, out)


def wise_sweep(start, tuned, alphas: Sequence[float], out, metadata, split=None, subset: str = "val",
               metric: str = "top1", labels=None, image_root=None, device: str = "auto", workers: int | None = None,
               batch_size: int = 64) -> dict:
    """Evaluate each alpha on the frames of `metadata` (or `split`'s `subset`), write the best as
    `out` and the table beside it (`<out>-sweep/sweep.csv`, `.md`, one eval folder per alpha).
    Returns {"best_alpha", "best": its metrics, "table": DataFrame, "checkpoint", "sweep_dir"}."""
    if metric not in VALIDATION_METRICS:
        raise DataError(f"--metric {metric!r} is not one of {', '.join(VALIDATION_METRICS)}")
    out = Path(out)
    sweep_dir = out.with_name(f"{out.name}-sweep")
    endpoints = WiseEndpoints(start, tuned, device=device if device != "auto" else _auto_device())
    rows, results = [], {}
    for alpha in alphas:
        metrics = evaluate_checkpoint(endpoints.tuned, metadata, split=split, subset=subset, image_root=image_root,
                                      out_dir=sweep_dir / f"alpha-{alpha:.3f}", workers=workers,
                                      batch_size=batch_size, classifier=endpoints.classifier(alpha, labels))
        logger.info("WiSE-FT alpha %.3f: %s %.4f", alpha, metric, metrics[metric])
        results[alpha] = metrics
        rows.append({"alpha": alpha, **{k: metrics.get(k) for k in SWEEP_COLUMNS[1:]}, metric: metrics.get(metric)})
    lower = metric in LOWER_IS_BETTER
    best_alpha = min(results, key=lambda a: results[a][metric] if lower else -results[a][metric])
    table = pd.DataFrame(rows)
    atomic_write_text(sweep_dir / "sweep.csv", table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(sweep_dir / "sweep.md", f"WiSE-FT from {endpoints.start} (alpha 0) to {endpoints.tuned} "
                      f"(alpha 1), evaluated on {split or metadata}; best {metric} at alpha {best_alpha:g}.\n\n"
                      + markdown_table(table, list(table.columns), digits=3) + "\n")
    checkpoint = endpoints.save(best_alpha, out, metrics={k: v for k, v in results[best_alpha].items()
                                                          if isinstance(v, (int, float))},
                                sweep=str(sweep_dir / "sweep.csv"))
    return {"best_alpha": best_alpha, "best": results[best_alpha], "table": table, "checkpoint": str(checkpoint),
            "sweep_dir": str(sweep_dir), "metric": metric}


def _auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
