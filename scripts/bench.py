"""Benchmark clipmg against open_clip_train and a per-image loop (see docs/benchmarks.md).

    .venv/bin/python scripts/bench.py --out docs/bench/cpu --update-doc docs/benchmarks.md

`--help` lists the options; the logic lives in clipmg/bench.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipmg.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
