#!/usr/bin/env bash
# The clip-level comparison of docs/approaches.md ("Clip-level models"): a frame model with its
# logits averaged per clip, against clip models (8 frames per clip) with mean pooling, attention
# pooling and a temporal transformer, on the motion demo (classes 1-4 differ only in the order of
# their frames) and on the static demo (the same clips standing still), seeds 0, 1 and 2 (each
# seed draws its own data, split and initialisation), then one table of mean +- std over seeds.
#
#   bash scripts/compare_temporal.sh [OUT] [clipmg compare flags, e.g. --device cuda]
#   SEEDS="0" DATA="motion" bash scripts/compare_temporal.sh runs/smoke --epochs contrastive=2
#
# In demo mode every seed trains the demo's contrastive model (15 epochs) and fine-tunes three clip
# models from it (5 epochs each): about an hour for all six on a 2-core CPU. `--mode quick` runs it all in a minute
# (tiny models, two steps: a smoke test whose figures mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/temporal}
shift || true
SEEDS=${SEEDS:-0 1 2}
DATA=${DATA:-motion static}
CLIPMG=${CLIPMG:-clipmg}
for data in $DATA; do
  for seed in $SEEDS; do
    $CLIPMG compare --out "$OUT/$data/seed$seed" --demo-data "$data" --seed "$seed" \
        --approaches frame-average clip-mean clip-attention clip-transformer "$@"
  done
done
${PYTHON:-python} - "$OUT" <<'PY'
"""Mean +- standard deviation (n-1) over seeds of each approach's own clip predictions: the frame model's mean of
logits (clip_*), the clip models' temporal heads (clip_model_*); and their clip top-1 on the
classes that move in the motion demo (1-4, still in the static one) and on the others."""
import sys
from pathlib import Path

import pandas as pd

from clipmg.synthetic.motion import MOTIONS

out = Path(sys.argv[1])


def top1_by_group(seed_dir: Path, approach: str) -> dict:
    clips = pd.read_csv(seed_dir / approach / "eval" / "clip_predictions.csv")
    moving = clips["true_class"].isin(list(MOTIONS))
    right = clips["pred_class"] == clips["true_class"]
    return {"classes 1-4": right[moving].mean(), "classes 5+": right[~moving].mean()}


columns = ("clip top-1", "clip balanced accuracy", "classes 1-4", "classes 5+", "top1")
lines = []
for data in sorted(p.name for p in out.iterdir() if p.is_dir()):
    seed_dirs = sorted(path.parent for path in (out / data).glob("seed*/comparison.csv"))
    tables = []
    for seed_dir in seed_dirs:
        table = pd.read_csv(seed_dir / "comparison.csv")
        groups = pd.DataFrame([top1_by_group(seed_dir, name) for name in table["approach"]])
        tables.append(pd.concat([table, groups], axis=1))
    rows = pd.concat(tables)
    own = rows.get("clip_model_top1", pd.Series(float("nan"), index=rows.index)).isna()
    rows["clip top-1"] = rows["clip_model_top1"].where(~own, rows["clip_top1"]) if "clip_model_top1" in rows else rows["clip_top1"]
    rows["clip balanced accuracy"] = (rows["clip_model_balanced_accuracy"].where(~own, rows["clip_balanced_accuracy"])
                                      if "clip_model_balanced_accuracy" in rows else rows["clip_balanced_accuracy"])
    lines += [f"{data} demo, {len(tables)} seed(s):", "",
              "| approach | clip top-1 | clip balanced accuracy | clip top-1, classes 1-4 | clip top-1, classes 5+ "
              "| frame top-1 |", "|---|---|---|---|---|---|"]
    for name, group in rows.groupby("approach", sort=False):
        cells = [f"{group[c].mean():.3f} +- {group[c].std(ddof=1):.3f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
text = "\n".join(lines)
(out / "summary.md").write_text(text + "\n", encoding="utf-8")
print(text)
PY
