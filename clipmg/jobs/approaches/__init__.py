"""Approaches of `clipmg compare`, registered by name; importing this package registers the
built-in, pose, fine-tuning-tool and clip-level (temporal) approaches."""

from clipmg.jobs.approaches import builtin, pose, temporal, tuning  # noqa: F401  (they register themselves)
from clipmg.jobs.approaches.registry import (
    APPROACHES,
    Approach,
    ApproachResult,
    ComparisonContext,
    register_approach,
)

__all__ = ["APPROACHES", "Approach", "ApproachResult", "ComparisonContext", "register_approach"]
