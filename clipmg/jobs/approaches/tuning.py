"""The fine-tuning and test-time tools as `clipmg compare` rows (docs/fine_tuning.md).

- `ema`: the contrastive run with EMA weights (`--ema-decay`), from scratch like `contrastive`;
- `tta-flip`, `tta-crops`: the `contrastive` checkpoint evaluated with test-time augmentation;
- `ensemble-3-seeds`: `contrastive` and two more runs of it with the next seeds, their class
  probabilities averaged;
- `fine-tune`: the `contrastive` checkpoint fine-tuned further (`--init-from`), the reference of
  the next three, which start from it with the same budget and learning rates:
- `lora`: fine-tuned with LoRA adapters on both towers (merged into the checkpoint);
- `layer-decay`: fine-tuned with layer-wise learning-rate decay 0.75;
- `wise`: WiSE-FT halfway between `contrastive` (alpha 0) and `fine-tune` (alpha 1).
"""

from __future__ import annotations

from pathlib import Path

from clipmg.jobs.approaches.registry import ApproachResult, ComparisonContext, register_approach
from clipmg.jobs.wise import wise_checkpoint

EMA_DECAY = 0.99  # an average over about the last 100 steps: a demo run takes a few hundred
FINE_TUNE: dict = {}  # the recipe's: --init-from fine-tuning rates, warm-up 5% of the run
LORA = {"lora_rank": 8, "lora_targets": "linear,attention,conv"}  # adapters at the recipe's LoRA rate
LAYER_DECAY = 0.75  # timm's CLIP fine-tuning recipes
WISE_ALPHA = 0.5
ENSEMBLE_SEEDS = 3


@register_approach("ema", default=False, description=f"contrastive model with EMA weights (decay {EMA_DECAY}), the better of "
                                      "EMA and raw weights kept each epoch")
def ema(ctx: ComparisonContext) -> ApproachResult:
    return ctx.train("ema", ema_decay=EMA_DECAY)


def _tta(mode: str):
    def run(ctx: ComparisonContext) -> ApproachResult:
        source = ctx.run("contrastive")
        return ApproachResult(checkpoint=source.checkpoint, budget=f"the contrastive run, --tta {mode}", tta=mode)

    return run


register_approach("tta-flip", _tta("flip"), default=False, description="the contrastive checkpoint, each frame scored as the mean "
                                                        "logits of it and its mirror image")
register_approach("tta-crops", _tta("crops"), default=False, description="the contrastive checkpoint, each frame scored as the mean "
                                                          "logits of it and five 87.5% crops")


@register_approach("ensemble-3-seeds", default=False, description=f"{ENSEMBLE_SEEDS} contrastive runs (seeds s, s+1, s+2) with "
                                                   "their class probabilities averaged")
def ensemble(ctx: ComparisonContext) -> ApproachResult:
    seed = int(ctx.base_settings.get("seed", 42))
    members = [ctx.run("contrastive").checkpoint]
    members += [ctx.train(f"contrastive-seed{seed + i}", seed=seed + i).checkpoint for i in range(1, ENSEMBLE_SEEDS)]
    return ApproachResult(checkpoint=members, budget=f"{ENSEMBLE_SEEDS} contrastive runs (time of the 2 extra)")


def _fine_tune(name: str, **overrides):
    def run(ctx: ComparisonContext) -> ApproachResult:
        source = ctx.run("contrastive")
        return ctx.train(name, **{**FINE_TUNE, **overrides}, init_from=str(source.checkpoint))

    return run


register_approach("fine-tune", _fine_tune("fine-tune"), default=False,
                  description="the contrastive checkpoint fine-tuned further (reference for lora, layer-decay, wise)")
register_approach("lora", _fine_tune("lora", **LORA), default=False,
                  description=f"the contrastive checkpoint fine-tuned with rank-{LORA['lora_rank']} LoRA adapters "
                              "on both towers, merged into the checkpoint")
register_approach("layer-decay", _fine_tune("layer-decay", layer_decay=LAYER_DECAY), default=False,
                  description=f"the contrastive checkpoint fine-tuned with layer-wise lr decay {LAYER_DECAY}")


@register_approach("wise", default=False, description=f"WiSE-FT: weights (1 - {WISE_ALPHA}) * contrastive + {WISE_ALPHA} * fine-tune")
def wise(ctx: ComparisonContext) -> ApproachResult:
    start, tuned = ctx.run("contrastive").checkpoint, ctx.run("fine-tune").checkpoint
    folder = wise_checkpoint(start, tuned, WISE_ALPHA, ctx.out_dir / "wise" / "checkpoint")
    return ApproachResult(checkpoint=Path(folder), budget=f"alpha {WISE_ALPHA}, no training")
