#!/usr/bin/env bash
# WiSE-FT on a real shift (docs/fine_tuning.md, "WiSE-FT across two webcam sessions"): the webcam photos
# of ../shared/webcam-gestures were taken in two sessions months apart. A model trained with the
# defaults on session 1 is fine-tuned (--init-from, the defaults' fine-tuning rates) on session 2,
# then `clipmg wise` sweeps alpha 0:1:0.1 between the two and scores every alpha on held-out clips
# of each session (clip-grouped splits, one per session, so no clip is on both sides).
#
#   bash scripts/wise_session_shift.sh [OUT] [WEBCAM]      # defaults: runs/wise-session-shift, ../shared/webcam-gestures
#   EXTRA="--device cuda" bash scripts/wise_session_shift.sh                 # flags of train and wise
#   TRAIN_FLAGS="--model openclip:ViT-B-32 --pretrained openai" bash scripts/wise_session_shift.sh
#   START=2 TUNE=1 bash scripts/wise_session_shift.sh runs/wise-2-to-1     # the other direction
#
# A development check on data the project does not ship: it stops with a message when the photos
# are absent, and the tests never run it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/wise-session-shift}
WEBCAM=${2:-../shared/webcam-gestures}
CLIPMG=${CLIPMG:-clipmg}
PYTHON=${PYTHON:-python}
EXTRA=${EXTRA:-}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
START=${START:-1}
TUNE=${TUNE:-2}
if [[ ! -f "$WEBCAM/training/train.xlsx" ]]; then
  echo "no webcam photos at $WEBCAM (expected $WEBCAM/training/train.xlsx); nothing to do" >&2
  exit 1
fi
IMAGES="$WEBCAM/training"
LABELS="$WEBCAM/Clip_label.csv"
mkdir -p "$OUT"

# One metadata file and one clip-grouped split per session.
$PYTHON - "$IMAGES/train.xlsx" "$OUT" <<'PY'
import sys
from pathlib import Path

import pandas as pd

frames, out = pd.read_excel(sys.argv[1]), Path(sys.argv[2])
for session, rows in frames.groupby("Session"):
    (out / f"session{session}").mkdir(exist_ok=True)
    rows.to_csv(out / f"session{session}" / "frames.csv", index=False)
PY
for s in 1 2; do
  $CLIPMG split --metadata "$OUT/session$s/frames.csv" --labels "$LABELS" --image-root "$IMAGES" --by clip \
      --seed 0 --out "$OUT/session$s/split.csv"
done

# Start: trained on session START (all defaults). Fine-tune: from its best weights, on session TUNE.
[[ -f "$OUT/start/best/config.json" ]] || \
  $CLIPMG train --metadata "$OUT/session$START/frames.csv" --labels "$LABELS" --image-root "$IMAGES" \
      --split "$OUT/session$START/split.csv" --output "$OUT/start" $TRAIN_FLAGS $EXTRA
[[ -f "$OUT/fine-tune/best/config.json" ]] || \
  $CLIPMG train --metadata "$OUT/session$TUNE/frames.csv" --labels "$LABELS" --image-root "$IMAGES" \
      --split "$OUT/session$TUNE/split.csv" --init-from "$OUT/start/best" --output "$OUT/fine-tune" $TRAIN_FLAGS $EXTRA

# The sweep, scored on the held-out clips of each session.
for s in 1 2; do
  $CLIPMG wise --from "$OUT/start/best" --to "$OUT/fine-tune/best" --alpha 0:1:0.1 \
      --split "$OUT/session$s/split.csv" --subset val --labels "$LABELS" --image-root "$IMAGES" \
      --metric top1 --out "$OUT/wise-best-on-session$s" $EXTRA
done

# One table: each alpha on both sessions' held-out clips.
$PYTHON - "$OUT" "$START" "$TUNE" <<'PY'
import sys
from pathlib import Path

import pandas as pd

from clipmg.utils import markdown_table

out, start, tune = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
columns = ["top1", "balanced_accuracy", "macro_f1"]
parts = [pd.read_csv(out / f"wise-best-on-session{s}-sweep" / "sweep.csv").set_index("alpha")[columns]
         .add_prefix(f"session{s}_") for s in (1, 2)]
table = pd.concat(parts, axis=1).reset_index()
table["mean_top1"] = (table["session1_top1"] + table["session2_top1"]) / 2
(out / "summary.md").write_text(f"WiSE-FT between the session-{start} model (alpha 0) and its session-{tune} fine-tune "
                                "(alpha 1), on the held-out clips of each session.\n\n" + markdown_table(table, digits=3) + "\n")
table.to_csv(out / "summary.csv", index=False, float_format="%.4f")
print((out / "summary.md").read_text())
PY
