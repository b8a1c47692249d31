"""Shared helpers in clipmg/utils.py: the process's memory allocator."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from clipmg import utils

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Ten inference passes of a small CNN whose activations (32 MiB each) are over glibc's
# largest mmap threshold; prints whether the tuning applied and the median page faults of the
# last eight passes (activations mapped anew each pass fault in anew). The median, not the
# most: on a busy CI machine one late pass of the tuned heap was seen to grow by 64 MiB.
FAULTS_SCRIPT = """
import resource, statistics, sys, torch
from clipmg.utils import keep_freed_memory_for_reuse
applied = keep_freed_memory_for_reuse() if sys.argv[1] == "tuned" else False
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
images = torch.rand(16, 3, 128, 128)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        net(images)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, int(statistics.median([faults() for _ in range(10)][2:])))
"""


def _steady_allocation_faults(mode: str) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD",
                                                                                            "GLIBC_TUNABLES")}
    done = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, env=env,
                          check=True)
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not GLIBC, reason="the allocator tuning is glibc's mallopt")
def test_activations_reuse_freed_memory_instead_of_faulting_in_again():
    default_applied, default_faults = _steady_allocation_faults("default")
    tuned_applied, tuned_faults = _steady_allocation_faults("tuned")
    assert not default_applied and tuned_applied
    assert default_faults > 8000  # at least one 32 MiB activation mapped anew: 8192 pages
    assert tuned_faults < default_faults / 10


@pytest.mark.parametrize("name, value", [("MALLOC_ARENA_MAX", "2"), ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")])
def test_allocator_chosen_by_the_user_is_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert utils.allocator_left_to_user()
    assert utils.keep_freed_memory_for_reuse() is False


def test_atomic_writes_replace_whole_files_with_the_usual_mode(tmp_path):
    target = tmp_path / "table.csv"
    utils.atomic_write_text(target, "old\n")
    with pytest.raises(KeyboardInterrupt), utils.atomic_output(target) as handle:
        handle.write("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # readable as open() would make it, not private


def test_progress_writes_lines_to_a_log_and_a_bar_to_a_terminal():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log, terminal = io.StringIO(), Terminal()
    utils.set_progress(True)
    for stream in (log, terminal):
        bar = utils.progress(range(3000), file=stream, desc="epoch 1/2")
        for i in bar:
            bar.set_postfix(loss=f"{i}")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and 2 <= len(lines) <= 4 and "3000/3000" in lines[-1]
    assert "\r" in terminal.getvalue()
