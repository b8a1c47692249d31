"""Classify the images listed in a CSV with a trained checkpoint (same as `clipmg predict`).

    python test.py --imagepathscsv frames.csv --columnname Path [--checkpoint checkpoints/best]

Writes predictions.csv beside the input (one row per input row) and, when the CSV has a
Class or Caption column, prints and writes the metrics. `python test.py -h` lists the options.
"""

import sys
from pathlib import Path

from clipmg.cli import main

GLOBAL_FLAGS = {"-q", "--quiet", "-v", "--verbose"}


def predict_argv(argv: list[str]) -> list[str]:
    """`clipmg [-q|-v] predict ...`; the default checkpoint is also found from outside the repository."""
    front = [a for a in argv if a in GLOBAL_FLAGS]
    rest = [a for a in argv if a not in GLOBAL_FLAGS]
    here = Path(__file__).resolve().parent / "checkpoints" / "best"
    if not any(a == "--checkpoint" or a.startswith("--checkpoint=") for a in rest) \
            and not Path("checkpoints/best").exists() and here.exists():
        rest += ["--checkpoint", str(here)]
    return [*front, "predict", *rest]


if __name__ == "__main__":
    sys.exit(main(predict_argv(sys.argv[1:])))
