"""Small shared helpers: logging, progress bars, seeding, devices, atomic file writes."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger("clipmg")

# The CLI sets this from --quiet; library code only ever calls progress().
_PROGRESS_ENABLED = True


def set_progress(enabled: bool) -> None:
    global _PROGRESS_ENABLED
    _PROGRESS_ENABLED = enabled


def progress(iterable=None, **kwargs):
    """The one place the library shows progress (a tqdm bar, silenced by the CLI's --quiet)."""
    kwargs.setdefault("disable", not _PROGRESS_ENABLED)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str | None = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that a reader never sees it half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def threads_beside_workers(device: torch.device, workers: int):
    """On the CPU, leave a core to each decoding worker: with more busy threads than cores,
    the model's OpenMP threads wait on each other (here 2 threads beside 2 workers ran ~10x
    slower than 1)."""
    before = torch.get_num_threads()
    wanted = max(1, min(before, (os.cpu_count() or 1) - workers))
    if device.type != "cpu" or workers == 0 or wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)
