"""Training-time validation: the validation frames scored by `class_logits`, the rule of predict,
evaluate and test.py, with the same test-time augmentation (`--tta`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from clipmg import data as cdata
from clipmg.checkpoint import load_checkpoint
from clipmg.inference.adapt import MIN_FRAMES, adapt_batch_norm, sample_indices
from clipmg.inference.tta import tta_logits
from clipmg.metrics import LOWER_IS_BETTER, compute_metrics
from clipmg.models import model_extras
from clipmg.prompts import build_class_embeddings
from clipmg.training.data import loader_options, run_dataset, run_items
from clipmg.utils import logger, progress


@torch.no_grad()
def validate_model(model, loader, frames, targets: torch.Tensor, data, prompt_set, device: torch.device,
                   autocast, tta: str = "none") -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """(metrics, (logits, targets)) of `model` on the validation `frames` that `loader` yields."""
    model.eval()
    class_embeddings = None if model.has_classifier_head else build_class_embeddings(
        model, data.class_names, prompt_set, class_ids=data.class_ids)
    if getattr(model, "reads_whole_clip", False):
        logits, indices = whole_clip_logits(model, loader, frames, class_embeddings, device, autocast, tta)
    else:
        logits, indices = item_logits(model, loader, class_embeddings, device, autocast, tta)
    targets = targets[indices]
    metrics = compute_metrics(logits, targets, clip_ids=frames["video_id"].iloc[indices.numpy()].values,
                              num_classes=len(data.class_ids))
    metrics["loss"] = F.cross_entropy(logits, targets).item()
    if len(indices) < len(frames):
        metrics["skipped_images"] = len(frames) - len(indices)
    return metrics, (logits, targets)


def item_logits(model, loader, class_embeddings, device: torch.device, autocast, tta: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, item index) of every item (frame or clip) that `loader` yields."""
    all_logits, all_indices = [], []
    for batch in progress(loader, desc="validate"):
        images = cdata.normalize_images(batch["image"].to(device, non_blocking=True))
        with autocast():
            logits = tta_logits(lambda view, **extras: model.class_logits(view, class_embeddings, **extras),
                                images, model_extras(model, batch, device), tta)
        all_logits.append(logits.float().cpu())
        all_indices.append(batch["index"])
    return torch.cat(all_logits), torch.cat(all_indices)


def whole_clip_logits(model, loader, clips, class_embeddings, device: torch.device, autocast, tta: str
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, clip index) of the `clips` (`run_items` rows) of a clip model that pools every
    frame of a clip: `loader` yields the frames, each clip is scored on the mean of its frames'
    features, as test.py scores it. Clips none of whose frames could be read are left out."""
    clip_of = np.empty(int(clips["n_frames"].sum()), dtype=np.int64)
    clip_of[np.concatenate(clips["positions"].tolist())] = np.repeat(np.arange(len(clips)), clips["n_frames"])
    sums, counts = torch.zeros(len(clips), model.feature_dim), torch.zeros(len(clips))
    for batch in progress(loader, desc="validate"):
        images = cdata.normalize_images(batch["image"].to(device, non_blocking=True))
        with autocast():
            features = tta_logits(model.frame_features, images, model_extras(model, batch, device), tta)
        owners = torch.from_numpy(clip_of[batch["index"].numpy()])
        sums.index_add_(0, owners, features.float().cpu())
        counts += torch.bincount(owners, minlength=len(clips))
    indices = torch.nonzero(counts > 0).flatten()
    pooled = (sums[indices] / counts[indices, None]).to(device)
    with autocast():
        logits = model.logits_from_features(model.clip_features(pooled[:, None]), class_embeddings)
    return logits.float().cpu(), indices


def score_test_part(checkpoint: Path, data, cfg, prompt_set, device: torch.device, autocast,
                    workers: int) -> dict | None:
    """Metrics of `checkpoint` on the run's test frames, read and scored as test.py does by default
    (no frame cache; batch-norm statistics re-estimated on the test frames, `clipmg.inference.adapt`),
    or None when the split kept no test part."""
    test_df = data.test_frames
    if test_df is None or test_df.empty:
        logger.info("no test part in this split: the figures above come from the validation frames that "
                    "chose best/, and flatter it (--test-fraction, or a split CSV with test rows)")
        return None
    model, _ = load_checkpoint(checkpoint, device=device)
    items = run_items(test_df, getattr(model, "clip_frames", None))
    dataset = run_dataset(data, test_df, model, cfg.replace(cache_frames=False), train=False)
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size * 2, shuffle=False, **loader_options(workers, device))
    adapted = adapt_to_frames(model.eval(), dataset, len(test_df), loader.batch_size, workers, device, autocast)
    targets = torch.tensor([data.index_of[c] for c in items["class_id"]], dtype=torch.long)
    metrics, _ = validate_model(model, loader, items, targets, data, prompt_set, device, autocast, cfg.tuning.tta)
    metrics["bn_adapted_on"] = adapted
    logger.info("test part (%d frames that neither trained nor chose %s%s): %s", len(test_df), checkpoint.name,
                f"; batch norm adapted to {adapted} of them" if adapted else "",
                " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


def adapt_to_frames(model, dataset, n_frames: int, batch_size: int, workers: int, device: torch.device,
                    autocast) -> int:
    """Re-estimate `model`'s batch-norm statistics on a sample of `dataset`'s items (its `n_frames`
    frames, or clips of them), as test.py does; the frames used (0: unchanged)."""
    if n_frames < MIN_FRAMES:
        return 0
    sample = DataLoader(Subset(dataset, sample_indices(len(dataset)).tolist()), batch_size=batch_size,
                        shuffle=False, **loader_options(workers, device))

    def forward(batch):
        with autocast():
            model.scoring_features(cdata.normalize_images(batch["image"].to(device, non_blocking=True)),
                                   **model_extras(model, batch, device))

    return adapt_batch_norm(model, sample, forward, size=lambda batch: batch["image"].shape[:-3].numel())


def better(a: float, b: float, monitor: str) -> bool:
    """Whether value `a` of metric `monitor` is better than `b`."""
    return a < b if monitor in LOWER_IS_BETTER else a > b


def raw_or_ema(raw: dict, ema: dict, monitor: str) -> tuple[dict, bool]:
    """The better of the raw and the EMA weights' metrics (ties keep the raw weights), with both
    figures of the monitored metric and `ema_selected`; and whether the EMA's won."""
    use_ema = better(ema[monitor], raw[monitor], monitor)
    chosen = dict(ema if use_ema else raw)
    chosen.update({f"raw_{monitor}": raw[monitor], f"ema_{monitor}": ema[monitor], "ema_selected": float(use_ema)})
    return chosen, use_ema
