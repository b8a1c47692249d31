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
# models from it (5 epochs each): hours on a 2-core CPU. `--mode quick` runs it all in a minute
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
"""Mean +- std over seeds of each approach's own clip predictions: the frame model's mean of
logits (clip_*), the clip models' temporal heads (clip_model_*)."""
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
lines = []
for data in sorted(p.name for p in out.iterdir() if p.is_dir()):
    tables = [pd.read_csv(path) for path in sorted((out / data).glob("seed*/comparison.csv"))]
    rows = pd.concat(tables)
    own = rows.get("clip_model_top1", pd.Series(float("nan"), index=rows.index)).isna()
    rows["clip top-1"] = rows["clip_model_top1"].where(~own, rows["clip_top1"]) if "clip_model_top1" in rows else rows["clip_top1"]
    rows["clip balanced accuracy"] = (rows["clip_model_balanced_accuracy"].where(~own, rows["clip_balanced_accuracy"])
                                      if "clip_model_balanced_accuracy" in rows else rows["clip_balanced_accuracy"])
    lines += [f"{data} demo, {len(tables)} seed(s):", "",
              "| approach | clip top-1 | clip balanced accuracy | frame top-1 |", "|---|---|---|---|"]
    for name, group in rows.groupby("approach", sort=False):
        cells = [f"{group[c].mean():.3f} +- {group[c].std(ddof=0):.3f}"
                 for c in ("clip top-1", "clip balanced accuracy", "top1")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
text = "\n".join(lines)
(out / "summary.md").write_text(text + "\n", encoding="utf-8")
print(text)
PY
