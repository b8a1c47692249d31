"""The targets each model's figures are held to, and the verdicts on them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    key: str
    what: str
    at_least: float | None = None
    at_most: float | None = None
    clip_text_only: bool = False  # stated for the CLIP-sized text tower only

    def met(self, value: float) -> bool:
        if self.at_least is not None:
            return value >= self.at_least
        return value <= self.at_most

    def describe(self) -> str:
        return f">= {self.at_least:g}" if self.at_least is not None else f"<= {self.at_most:g}"


TARGETS = (
    Target("training_speedup", "clipmg train samples/s / open_clip_train samples/s", at_least=1.5,
           clip_text_only=True),
    Target("loop_speedup", "test.py images/s / per-image loop images/s", at_least=30.0, clip_text_only=True),
    Target("pipeline_efficiency", "test.py images/s / model-only images/s", at_least=0.8),
    Target("memory_growth", "test.py process peak RSS at the larger row count / at the smaller",
           at_most=1.10),
)


def evaluate_targets(result: dict, clip_text: bool) -> list[dict]:
    values = {"training_speedup": result["training"]["speedup"],
              "loop_speedup": result["inference"]["loop_speedup"],
              "pipeline_efficiency": result["inference"]["pipeline_efficiency"],
              "memory_growth": result["inference"]["memory"]["growth"]}
    return [{"key": t.key, "what": t.what, "target": t.describe(), "value": values[t.key],
             "met": t.met(values[t.key]), "required": clip_text or not t.clip_text_only} for t in TARGETS]
