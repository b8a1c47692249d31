"""Small shared helpers: logging, progress bars, devices, atomic file writes, the process's
memory allocator."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

logger = logging.getLogger("clipmg")

# The CLI sets this from --quiet; library code only ever calls progress().
_PROGRESS_ENABLED = True


def set_progress(enabled: bool) -> None:
    global _PROGRESS_ENABLED
    _PROGRESS_ENABLED = enabled


LOG_LINE_SECONDS = 10.0  # progress written to a log file: a line at most this often


class LineProgress(tqdm):
    """tqdm for logs (stderr not a terminal: a file, CI, nohup): whole lines at most every
    `mininterval` seconds, and the final count, instead of carriage-return redraws."""

    def display(self, msg=None, pos=None):
        if msg == "":  # tqdm clearing its bar: nothing to clear in a log
            return False
        self.fp.write((self.__str__() if msg is None else msg).strip() + "\n")
        self.fp.flush()
        return True

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)

    def close(self):
        if not self.disable and getattr(self, "last_print_n", self.n) != self.n:
            self.display()
        super().close()


def progress(iterable=None, file=None, **kwargs):
    """The one place the library shows progress (a tqdm bar, silenced by the CLI's --quiet): a bar
    on a terminal, a line every few seconds in a log."""
    kwargs.setdefault("disable", not _PROGRESS_ENABLED)
    kwargs.setdefault("leave", False)
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.setdefault("mininterval", LOG_LINE_SECONDS)
    return LineProgress(iterable, file=stream, **kwargs)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def resolve_device(device: str | None = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: `--precision`: auto (the rule of `autocast_dtype`), or one precision everywhere
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The one precision policy of training and inference: the autocast dtype for `precision` on
    `device`, None for fp32. "auto" is fp32 off CUDA (bf16 autocast is far slower than fp32 on
    CPUs without AMX, docs/benchmarks.md), bf16 on GPUs that have it, else fp16."""
    device = resolve_device(device)
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(dtype: torch.dtype | None, device: str | torch.device):
    """`torch.autocast` to `dtype` (from `autocast_dtype`) on `device`; a no-op for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(resolve_device(device).type, dtype=dtype)


CPU_CORES_PER_WORKER = 8


def default_workers(device: str | torch.device = "auto") -> int:
    """The one rule for image decoding processes, of training and inference: min(4, cores)
    beside a GPU. On the CPU each worker takes a whole core from the model
    (`threads_beside_workers`) while decoding a frame costs a small part of its forward: one
    worker per 8 cores, so none below 8 (docs/benchmarks.md, docs/recipes.md)."""
    cores = os.cpu_count() or 1
    return min(4, cores) if resolve_device(device).type == "cuda" else min(4, cores // CPU_CORES_PER_WORKER)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_CREATE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path beside `path` to write to; it replaces `path` only when the block
    succeeds, so a reader never sees a half-written file and a failure leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _CREATE_MODE)  # mkstemp makes the file private; give it the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """A text handle whose content replaces `path` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        yield handle


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that a reader never sees it half written."""
    with atomic_output(path) as handle:
        handle.write(text)


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
    every batch page-faults its activations in anew, which costs test.py a measurable share of
    its speed on a small CPU (docs/benchmarks.md).
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


def markdown_table(table, columns=None, digits: int = 4, verbatim: tuple[str, ...] = ("source",)) -> str:
    """A pandas DataFrame as a Markdown table: floats to `digits` decimals (NaN as n/a), except
    in the `verbatim` columns; `columns` defaults to every column not in `verbatim`."""
    columns = list(columns or [c for c in table.columns if c not in verbatim])

    def cell(column, value) -> str:
        if isinstance(value, float) and column not in verbatim:
            return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in table[columns].itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(columns, row)) + " |")
    return "\n".join(lines)
