"""Small shared helpers: logging, progress bars, seeding, devices, atomic file writes, the
process's memory allocator."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
HEAP_KEEP_BYTES = 1 << 30
_ALLOCATOR_PRELOADS = ("jemalloc", "tcmalloc", "mimalloc")


def allocator_left_to_user() -> bool:
    """True when the user chose the allocator's behaviour: another allocator preloaded, or
    glibc's malloc tuned through the environment."""
    if any(name in os.environ.get("LD_PRELOAD", "") for name in _ALLOCATOR_PRELOADS):
        return True
    return any(key.startswith("MALLOC_") for key in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory_for_reuse(keep_bytes: int = HEAP_KEEP_BYTES) -> bool:
    """Make glibc's malloc reuse the memory of freed tensors instead of handing it back.

    By default glibc maps each block above its mmap threshold (128 KiB, rising with use to at
    most 32 MiB: activations, batches) fresh from the kernel and unmaps it when freed, so
    every batch page-faults its activations in anew: on the 2-core CPU that cost test.py about
    a fifth of its speed (docs/benchmarks.md).
    Serving all blocks from the heap and keeping up to `keep_bytes` free at its top is what
    jemalloc or tcmalloc would give (PyTorch's CPU tuning guide preloads one of them).

    Applies to this process and the data workers it forks; a no-op off glibc, or when the
    user preloaded an allocator or set MALLOC_* / GLIBC_TUNABLES. Returns whether applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or allocator_left_to_user():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, keep_bytes))
    logger.debug("malloc: heap-only allocations, %d bytes kept for reuse: %s", keep_bytes, applied)
    return applied
