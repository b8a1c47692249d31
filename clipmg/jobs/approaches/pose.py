"""The pose approaches of `clipmg compare`: "pose-fusion" and "hand-crops".

Importing this module registers them (`register_approach`). Both train from
scratch with the comparison's common settings and epoch budget, like the "contrastive" row, and
differ from it only in their model wrapper; their keypoints come from MediaPipe through the
keypoint cache (the first of them to run extracts and caches them, which counts in its
train_seconds).
"""

from __future__ import annotations

from clipmg.jobs.approaches.registry import ApproachResult, ComparisonContext, register_approach

POSE_FUSION = "pose-fusion"
HAND_CROPS = "hand-crops"


@register_approach(POSE_FUSION, description="contrastive model whose image embedding is fused (concat) with "
                                            "MediaPipe body and hand keypoints encoded by an MLP")
def pose_fusion(ctx: ComparisonContext) -> ApproachResult:
    return ctx.train(POSE_FUSION, pose_fusion="concat")


@register_approach(HAND_CROPS, description="contrastive model scored on MediaPipe hand crops and the full frame; "
                                           "a frame's class has the highest probability over its crops")
def hand_crops(ctx: ComparisonContext) -> ApproachResult:
    return ctx.train(HAND_CROPS, hand_crops=True)
