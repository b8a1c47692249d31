"""The training loop: data -> model -> loss -> optimiser, with validation, checkpoints and resume.

Randomness is derived from (seed, epoch, step) rather than carried along, so that a run resumed
from any saved step replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from clipmg import data as cdata
from clipmg.checkpoint import CheckpointRecord, save_checkpoint
from clipmg.errors import TrainingError
from clipmg.losses import classification_loss, contrastive_loss
from clipmg.models import model_extras
from clipmg.outputs import check_output_folder
from clipmg.prompts import load_prompt_set
from clipmg.training import distributed as ddp
from clipmg.training.config import TrainConfig, save_config
from clipmg.training.data import (
    batch_budget,
    class_balance,
    default_train_workers,
    load_run_data,
    loader_options,
    run_dataset,
    run_items,
)
from clipmg.training.ema import create_ema, update_ema
from clipmg.training.lora import adapter_state, merged_copy
from clipmg.training.model import build_model
from clipmg.training.optim import (
    SchedulerInterval,
    autocast_dtype,
    build_optimizer,
    build_scheduler,
)
from clipmg.training.preemption import PreemptionWatch
from clipmg.training.recipes import (
    not_learning_warning,
    random_start_notice,
    resolve_learning_rates,
)
from clipmg.training.resume import restore
from clipmg.training.sampling import EpochSeededDataset, SeededSampler, step_seed
from clipmg.training.state import TrainerState
from clipmg.training.tensorboard import (
    log_confusions,
    log_epoch,
    log_step,
    log_validation_projector,
)
from clipmg.training.texts import TrainingTexts
from clipmg.training.validation import better, raw_or_ema, score_test_part, validate_model
from clipmg.utils import logger, progress, resolve_device, threads_beside_workers


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.run.output)
        self.resume_from = Path(resume) if resume else None
        self.device = resolve_device(cfg.run.device)
        self.env = ddp.init_distributed(self.device)
        self.device = ddp.device_for(self.env, self.device)
        self.workers = default_train_workers(self.device) if cfg.data.workers is None else cfg.data.workers
        self.writer = None
        self.best_validation = None  # (logits, targets, ...) of best/'s epoch in this process
        self.preemption = PreemptionWatch()  # idle until fit() enters it

    # ----------------------------------------------------------------- set-up
    def setup(self) -> None:
        cfg = self.cfg
        check_output_folder(self.run_dir, "--output")
        if self.env.is_main and self.resume_from is None:  # settings first: a kill from now on leaves a resumable run
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        torch.manual_seed(cfg.run.seed)
        self.data = load_run_data(cfg)
        self.train_df, self.val_df, self.image_root = self.data.train_frames, self.data.val_frames, self.data.image_root
        self.prompt_set = load_prompt_set(cfg.text.prompts)
        self.model = self._build_model().to(self.device)
        self.learning_rates = resolve_learning_rates(cfg.optim.lr_image, cfg.optim.lr_text, cfg.optim.lr_heads,
                                                     self.model.tower_origins,
                                                     from_checkpoint=bool(cfg.network.init_from),
                                                     lora=bool(cfg.tuning.lora_rank))
        self.cfg = cfg = cfg.replace(**self.learning_rates.as_config())
        if self.env.is_main:
            for line in (random_start_notice(self.model.tower_origins, bool(cfg.network.init_from)),
                         f"learning rates: {self.learning_rates.describe()}"):
                logger.info(line) if line else None
        self.ema = create_ema(self.model, cfg.tuning.ema_decay)
        self.preprocess = dict(self.model.preprocess_config)
        # a clip model trains on and validates clips (`clip_frames` frames each), other models frames
        clip_frames = getattr(self.model, "clip_frames", None)
        self.train_items, self.val_items = run_items(self.train_df, clip_frames), run_items(self.val_df, clip_frames)
        self.train_targets, self.val_targets = self._targets(self.train_items), self._targets(self.val_items)
        self.texts = TrainingTexts.build(self.train_items, self.train_targets, self.data.class_ids,
                                         self.data.class_names, self.prompt_set, cfg.text.text_source,
                                         cfg.objective.contrast)
        self.train_loader, self.train_sampler = self._train_loader()
        self.val_loader = self._val_loader()
        self.optimizer = build_optimizer(self.model, cfg)
        self.steps_per_epoch = self._optimizer_steps_per_epoch()
        self.scheduler, self.scheduler_every = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.autocast_dtype = autocast_dtype(cfg.optim.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.logit_bias, self.class_weights = class_balance(self.train_targets, len(self.data.class_ids), cfg,
                                                            self.model.has_classifier_head, self.device)
        self.wrapped = self._wrap_ddp(self.model)
        self.state = TrainerState()
        if self.resume_from is not None:
            restore(self, self.resume_from)
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            self.data.write_split(self.run_dir)
            if cfg.run.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def _targets(self, frames) -> torch.Tensor:
        index_of = self.data.index_of
        return torch.tensor([index_of[c] for c in frames["class_id"]], dtype=torch.long)

    def _build_model(self):
        return build_model(self.cfg, self.data.class_ids, self.data.class_names, self.device)

    def _wrap_ddp(self, model):
        if not self.env.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                         find_unused_parameters=True)

    def _train_loader(self):
        cfg = self.cfg
        weights = None
        if cfg.objective.balanced_sampler != "none":
            weights = torch.as_tensor(cdata.balanced_sample_weights(self.train_targets.numpy(),
                                                                    cfg.objective.balanced_sampler),
                                      dtype=torch.float32)
        self.train_dataset = EpochSeededDataset(run_dataset(self.data, self.train_df, self.model, cfg, train=True),
                                                cfg.run.seed)
        self.batch_items, draws = batch_budget(len(self.train_df), len(self.train_dataset), cfg.optim.batch_size,
                                               getattr(self.model, "clip_frames", None))
        sampler = SeededSampler(len(self.train_dataset), cfg.run.seed, self.env, self.batch_items, weights, draws=draws)
        loader = DataLoader(self.train_dataset, batch_size=self.batch_items, sampler=sampler, drop_last=False,
                            **loader_options(self.workers, self.device))
        return loader, sampler

    def _val_loader(self):
        return DataLoader(run_dataset(self.data, self.val_df, self.model, self.cfg, train=False),
                          batch_size=self.batch_items * 2, shuffle=False,
                          **loader_options(self.workers, self.device))

    def _optimizer_steps_per_epoch(self) -> int:
        batches = math.ceil(self.train_sampler.per_rank / self.batch_items)
        if self.cfg.optim.max_steps_per_epoch:
            batches = min(batches, self.cfg.optim.max_steps_per_epoch * self.cfg.optim.grad_accum)
        return max(1, math.ceil(batches / self.cfg.optim.grad_accum))

    def _bar_options(self) -> dict:
        return {} if self.env.is_main else {"disable": True}

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ----------------------------------------------------------------- resume
    def _trainer_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "trainer": self.state.to_dict(), "adapters": adapter_state(self.model),
                "ema": self.ema.module.state_dict() if self.ema is not None else {}}

    def _checkpoint_record(self, metrics: dict | None = None) -> CheckpointRecord:
        return CheckpointRecord(
            class_ids=self.data.class_ids, class_names=self.data.class_names, prompts=self.prompt_set.to_dict(),
            preprocess=self.preprocess, train=self.cfg.to_dict(), metrics=metrics or {}, epoch=self.state.epoch,
            split={k: v for k, v in self.data.split_report.items() if isinstance(v, (int, float, str))})

    def save(self, name: str, metrics: dict | None = None, with_state: bool = True, model=None) -> None:
        """Checkpoint `model` (default the trained one; LoRA adapters merged) as `name`/."""
        if not self.env.is_main:
            return
        model = merged_copy(self.model if model is None else model)
        save_checkpoint(self.run_dir / name, model, self._checkpoint_record(metrics),
                        self._trainer_state() if with_state else None)

    # ------------------------------------------------------------------ steps
    def _global_batch_texts(self, indices: torch.Tensor) -> torch.Tensor:
        local = self.texts.sample_text[indices]
        if not self.env.enabled or self.cfg.objective.contrast == "classes":
            return local
        return torch.cat([torch.as_tensor(x) for x in ddp.gather_objects(local.tolist(), self.env)])

    def _batch_images(self, batch: dict) -> torch.Tensor:
        # The training transforms already normalise (float batches), so this only lays the batch out
        # channels-last: the ResNet towers train faster on it on the CPU (docs/benchmarks.md).
        return cdata.normalize_images(batch["image"].to(self.device, non_blocking=True))

    def train_step(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        images = self._batch_images(batch)
        indices = batch["index"]
        labels = self.train_targets[indices].to(self.device)
        if self.model.has_classifier_head:
            return self._classification_step(images, labels, batch)
        global_texts = self._global_batch_texts(indices)
        texts, text_labels, _ = self.texts.for_step(global_texts, generator)
        with self._autocast():
            image_features, text_features, scale = self.wrapped(images, texts,
                                                                **model_extras(self.model, batch, self.device))
        image_features = ddp.gather_with_grad(image_features.float(), self.env)
        labels = ddp.gather_tensor(labels, self.env)
        logit_bias = self.logit_bias if self.cfg.objective.contrast == "classes" else None
        return contrastive_loss(self.cfg.objective.loss, image_features, text_features.float(), scale.float(),
                                labels, text_labels.to(self.device), logit_bias=logit_bias)

    def _classification_step(self, images: torch.Tensor, labels: torch.Tensor, batch: dict) -> torch.Tensor:
        with self._autocast():
            logits = self.wrapped(images, None, **model_extras(self.model, batch, self.device))
        return classification_loss(logits.float(), labels, self.class_weights, self.cfg.objective.focal_gamma,
                                   self.logit_bias)

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        self.model.train()
        skip_batches = self.state.step_in_epoch
        self.train_sampler.set_epoch(epoch, skip=skip_batches * self.batch_items)
        total_batches = math.ceil(self.train_sampler.per_rank / self.batch_items)
        limit = cfg.optim.max_steps_per_epoch * cfg.optim.grad_accum if cfg.optim.max_steps_per_epoch else None
        losses, seen, start = [], 0, time.perf_counter()
        bar = progress(self.train_loader, total=total_batches - skip_batches,
                       desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", **self._bar_options())
        self.optimizer.zero_grad(set_to_none=True)
        for batch_number, batch in enumerate(bar, start=skip_batches):
            if limit is not None and batch_number >= limit:
                break
            seed = step_seed(cfg.run.seed, epoch, batch_number + 1)
            torch.manual_seed(seed)
            loss = self.train_step(batch, torch.Generator().manual_seed(seed))
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, batch {batch_number + 1}; training "
                    f"stopped and {self.run_dir / 'last'} keeps the last good checkpoint. Lower the learning "
                    "rates, or use --precision fp32.")
            self.scaler.scale(loss / cfg.optim.grad_accum).backward()
            losses.append(loss.item())
            seen += len(batch["index"]) * self.env.world_size
            if (batch_number + 1) % cfg.optim.grad_accum == 0 or batch_number + 1 == total_batches:
                self._optimizer_step()
                self.state.step_in_epoch = batch_number + 1
                stop = self.preemption.stop_now(self.env, self.device)
                if stop or (cfg.run.save_every_steps and self.state.global_step % cfg.run.save_every_steps == 0):
                    self.save("last")
                if stop:
                    raise self.preemption.stop(self.run_dir, self.state, self.env)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", samples_s=f"{seen / (time.perf_counter() - start):.1f}")
        elapsed = time.perf_counter() - start
        return {"loss": float(np.mean(losses)) if losses else float("nan"),
                "samples_per_s": seen / elapsed if elapsed > 0 else 0.0}

    def _optimizer_step(self) -> None:
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler_every is SchedulerInterval.STEP:
            self.scheduler.step()
        self.state.global_step += 1
        update_ema(self.ema, self.model, self.state.global_step)
        if self.writer is not None:
            log_step(self.writer, self.state.global_step, self.optimizer, self.model.scale().item())

    # ------------------------------------------------------------- validation
    def validate(self) -> dict:
        """Metrics of the trained weights; with EMA, those of the better of them and the EMA
        weights, which `self.validated_model` then is (the one `best/` gets)."""
        metrics, self.last_validation = self._validate(self.model)
        self.validated_model = self.model
        if self.ema is not None:
            ema_metrics, ema_validation = self._validate(self.ema.module)
            metrics, use_ema = raw_or_ema(metrics, ema_metrics, self.cfg.run.monitor)
            if use_ema:
                self.validated_model, self.last_validation = self.ema.module, ema_validation
        return metrics

    def _validate(self, model) -> tuple[dict, tuple]:
        return validate_model(model, self.val_loader, self.val_items, self.val_targets, self.data, self.prompt_set,
                              self.device, self._autocast, self.cfg.tuning.tta)

    # ------------------------------------------------------------------- loop
    def _improved(self, value: float) -> bool:
        best = self.state.best
        return best is None or better(value, best, self.cfg.run.monitor)

    def _end_epoch(self, epoch: int, train_stats: dict, metrics: dict) -> bool:
        """Record, checkpoint and decide whether to stop early (rank 0 decides)."""
        cfg = self.cfg
        value = metrics[cfg.run.monitor]
        improved = self._improved(value)
        self.state.finish_epoch({"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_stats.items()},
                                 **{f"val_{k}": v for k, v in metrics.items()}, "finished_at": time.time()},
                                value, improved)
        if self.scheduler_every is SchedulerInterval.EPOCH:
            self.scheduler.step(value)
        if improved:
            self.save("best", metrics, with_state=False, model=self.validated_model)
            self.best_validation = self.last_validation
        self.save("last", metrics)
        self._log_epoch(epoch, train_stats, metrics)
        warning = not_learning_warning(self.state.history, self.val_df["class_id"].nunique(), self.learning_rates)
        if warning:
            logger.warning(warning)
        return cfg.run.patience is not None and self.state.epochs_without_improvement > cfg.run.patience

    def _log_epoch(self, epoch: int, train_stats: dict, metrics: dict) -> None:
        """The epoch's line, and its TensorBoard figures but the confusion images (`log_confusions`)."""
        if not self.env.is_main:
            return
        logger.info("epoch %d: train loss %.4f (%.1f samples/s) | val %s", epoch + 1, train_stats["loss"],
                    train_stats["samples_per_s"], " ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                           if isinstance(v, float)))
        if self.writer is None:
            return
        log_epoch(self.writer, epoch + 1, train_stats, metrics)
        if self.cfg.run.embed_every and (epoch + 1) % self.cfg.run.embed_every == 0:
            log_validation_projector(self.writer, self.model, self.data.class_ids, self.data.class_names,
                                     self.prompt_set, self.val_df, self.image_root, epoch + 1,
                                     max_images=self.cfg.run.embed_max_images, seed=self.cfg.run.seed,
                                     workers=self.workers, preprocess=self.preprocess)
        self.writer.flush()

    def fit(self) -> dict:
        with threads_beside_workers(self.device, self.workers):
            return self._fit()

    def _fit(self) -> dict:
        with PreemptionWatch(self.cfg.run.preempt_signal) as self.preemption:
            self.setup()
            return self._loop()

    def _loop(self) -> dict:
        try:
            for epoch in range(self.state.epoch, self.cfg.optim.epochs):
                train_stats = self.train_epoch(epoch)
                stop = self._end_epoch(epoch, train_stats, self.validate()) if self.env.is_main else False
                if self.preemption.stop_now(self.env, self.device) and epoch + 1 < self.cfg.optim.epochs:
                    raise self.preemption.stop(self.run_dir, self.state, self.env)  # last/ was saved at the epoch's end
                if ddp.broadcast_flag(stop, self.env):
                    logger.info("early stop: %s did not improve for %d epochs", self.cfg.run.monitor,
                                self.state.epochs_without_improvement)
                    break
            return self._finish()
        finally:
            if self.writer is not None:
                self.writer.close()
            ddp.cleanup(self.env)

    def test(self) -> dict | None:
        """best/'s metrics on the test part (frames that neither trained nor chose it), or None."""
        if not self.env.is_main or not (self.run_dir / "best").exists():
            return None
        return score_test_part(self.run_dir / "best", self.data, self.cfg, self.prompt_set, self.device,
                               self._autocast, self.workers)

    def _finish(self) -> dict:
        history, best = self.state.history, self.state.best_row()
        test = self.test()
        summary = {"run_dir": str(self.run_dir), "best_epoch": self.state.best_epoch, "epochs_run": len(history),
                   "best": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
                   "test": test, "figures_from": "test part" if test else "validation (chose best/)",
                   "split": self.data.split_report, "history": history}
        if self.writer is not None and history:
            log_confusions(self.writer, {self.state.best_epoch: self.best_validation,
                                         history[-1]["epoch"]: self.last_validation},
                           self.data.class_names, self.data.class_ids)
        if self.writer is not None and best:
            hparams = {k: v for k, v in self.cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
            self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in summary["best"].items()
                                              if isinstance(v, (int, float))}, run_name="hparams")
        return summary


def train(cfg: TrainConfig, resume: str | Path | None = None) -> dict:
    """Train a model as ``cfg`` says; returns a summary with the best validation metrics."""
    return Trainer(cfg, resume=resume).fit()
