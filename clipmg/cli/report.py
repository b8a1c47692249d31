"""Printing results the library returns: metrics and their files."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from clipmg.metrics import metrics_summary_lines, per_class_lines


def print_metrics(metrics: dict, files: Mapping[str, os.PathLike] | None = None) -> None:
    """The headline metrics, then (when `files` has the per-class CSV) per-class recall, then the files."""
    for line in metrics_summary_lines(metrics):
        print(f"  {line}")
    if not files:
        return
    if "per_class" in files:
        print("  per-class recall (support = labelled frames):")
        for line in per_class_lines(pd.read_csv(files["per_class"])):
            print(f"    {line}")
    print("  wrote " + ", ".join(str(path) for path in files.values()))
