"""The machine the benchmark runs on: its description, its load, torch's thread count, and
the environment of the subprocesses it starts."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    import open_clip

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB / 1024
    except (ValueError, OSError, AttributeError):
        memory = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "device": str(device),
            "memory_gib": round(memory, 1) if memory else None, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_1min_at_start": load_average()}


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env
