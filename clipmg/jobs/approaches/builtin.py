"""The built-in approaches of `clipmg compare`: the contrastive model, three supervised CNN
baselines, a linear head started at the zero-shot classifier, and a linear probe."""

from __future__ import annotations

from pathlib import Path

from clipmg.jobs.approaches.registry import ApproachResult, ComparisonContext, register_approach
from clipmg.jobs.linear_probe import probe_checkpoint

# Learning rates and warm-up are the recipe's (auto): from scratch for the CNNs unless
# pretrained weights are set, fine-tuning rates for a head over the contrastive checkpoint.
CNN_SETTINGS = {"head": "linear"}
FINE_TUNE_SETTINGS = {"head": "linear"}
ALEXNET_SIZE = 64  # the smallest even input AlexNet takes (its stride-4 stem and pools need 63)


def _cnn(model: str):
    def run(ctx: ComparisonContext) -> ApproachResult:
        overrides = dict(CNN_SETTINGS, model=model)
        if model == "torchvision:alexnet":
            size = ctx.base_settings.get("image_size") or ALEXNET_SIZE
            overrides["image_size"] = max(int(size), ALEXNET_SIZE)
        return ctx.train(_CNN_NAMES[model], **overrides)

    return run


_CNN_NAMES = {"timm:resnet50": "linear-resnet50", "timm:tf_efficientnetv2_b0": "linear-efficientnetv2_b0",
              "torchvision:alexnet": "linear-alexnet"}


@register_approach("contrastive", description="image-text contrastive model, classes scored against prompts")
def contrastive(ctx: ComparisonContext) -> ApproachResult:
    return ctx.train("contrastive")


for _model, _name in _CNN_NAMES.items():
    register_approach(_name, _cnn(_model),
                      description=f"{_model} + linear head, cross-entropy (from scratch unless pretrained is set)")


@register_approach("zeroshot-head", description="contrastive image tower + linear head started at the zero-shot "
                                                "classifier (prompt embeddings), fine-tuned with cross-entropy")
def zeroshot_head(ctx: ComparisonContext) -> ApproachResult:
    source = ctx.run("contrastive")
    return ctx.train("zeroshot-head", **FINE_TUNE_SETTINGS, init_from=str(source.checkpoint), init_head="zeroshot")


@register_approach("linear-probe", description="logistic regression on the frozen contrastive image embeddings")
def linear_probe(ctx: ComparisonContext) -> ApproachResult:
    source = ctx.run("contrastive")
    summary = probe_checkpoint(source.checkpoint, ctx.split, ctx.out_dir / "linear-probe", labels=ctx.labels,
                               image_root=ctx.image_root, device=ctx.base_settings.get("device", "auto"),
                               workers=ctx.base_settings.get("workers"))
    return ApproachResult(checkpoint=Path(summary["checkpoint"]),
                          budget=f"L-BFGS, {summary['probe']['max_iter']} iterations max, on cached embeddings")
