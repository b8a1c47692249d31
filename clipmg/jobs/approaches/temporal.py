"""The clip-level approaches of `clipmg compare`: a frame model whose logits are averaged per clip,
against clip models (K frames of a clip at a time) with a mean-pooling, attention-pooling or
temporal-transformer head.

Importing this module registers them. The clip models start from the "contrastive" run's
checkpoint (trained once, as for "zeroshot-head") and fine-tune it with their temporal head, so
the three clip rows share one image tower start and one budget and differ only in the head; the
mean-pooling row is the control for the extra training. "frame-average" is the contrastive run
itself, read at clip level (its `clip_*` columns). None of them is among `clipmg compare`'s
default approaches: they are meant for clips of several frames (`--demo-data motion`).
"""

from __future__ import annotations

from clipmg.jobs.approaches.registry import ApproachResult, ComparisonContext, register_approach

CLIP_FRAMES = 8
#: demo mode: fine-tuning a trained tower, as the zero-shot head does
FROM_FRAME_MODEL: dict = {}  # the recipe's: --init-from fine-tuning rates, warm-up 5% of the run
TEMPORAL = {"clip-mean": "mean", "clip-attention": "attention", "clip-transformer": "transformer"}


@register_approach("frame-average", default=False,
                   description="the contrastive frame model, its frames' logits averaged per clip (clip_* columns; "
                               "clip_majority_* for the majority vote)")
def frame_average(ctx: ComparisonContext) -> ApproachResult:
    source = ctx.run("contrastive")
    return ApproachResult(checkpoint=source.checkpoint, budget=f"the contrastive run ({source.budget})")


def clip_settings(ctx: ComparisonContext, temporal: str) -> dict:
    """TrainConfig overrides of a clip model from the contrastive run: K frames per clip (its
    batches hold as many clips as the frame model's hold frames)."""
    tuning = FROM_FRAME_MODEL if ctx.mode == "demo" else {}
    return {"clip_frames": CLIP_FRAMES, "temporal": temporal, **tuning}


def _clip_model(name: str, temporal: str):
    def run(ctx: ComparisonContext) -> ApproachResult:
        source = ctx.run("contrastive")
        return ctx.train(name, init_from=str(source.checkpoint), **clip_settings(ctx, temporal))

    return run


_DESCRIPTIONS = {"mean": "mean of the frame embeddings", "attention": "attention pooling (a weighted mean)",
                 "transformer": "a temporal transformer with frame positions (sees the order)"}
for _name, _temporal in TEMPORAL.items():
    register_approach(_name, _clip_model(_name, _temporal), default=False,
                      description=f"clip model from the contrastive run, {CLIP_FRAMES} frames per clip: "
                                  f"{_DESCRIPTIONS[_temporal]} (clip_model_* columns)")
