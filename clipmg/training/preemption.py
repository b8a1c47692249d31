"""Preemption: SIGTERM (what clusters send a job before they kill it) and an optional second
signal (`--preempt-signal USR1`, e.g. Slurm's `--signal=USR1@120`) ask training to stop.

The step under way finishes, `last/` is saved with its exact-resume state, and the trainer
raises `Preempted` (the CLI exits with its status, 75); `clipmg train --resume RUN` continues
exactly where it stopped. Under torchrun the ranks agree on the step: each optimizer step
all-reduces the stop flag, so every rank stops after the same step even when the signal reached
them at different moments (or only one of them).
"""

from __future__ import annotations

import signal
import threading

import torch

from clipmg.errors import DataError, Preempted
from clipmg.training import distributed as ddp
from clipmg.training.state import TrainerState
from clipmg.utils import logger

WORKER_IGNORED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def parse_signal(name: str | None) -> signal.Signals | None:
    """`USR1`, `SIGUSR1` or `10` -> signal.SIGUSR1; None / "none" -> None."""
    if name is None or str(name).lower() in ("", "none"):
        return None
    text = str(name).strip().upper()
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[text if text.startswith("SIG")
                                                                                else f"SIG{text}"]
    except (KeyError, ValueError):
        raise DataError(f"config: preempt_signal {name!r} is not a signal name (e.g. USR1, USR2, HUP)") from None


def ignore_preemption_signals(worker_id: int) -> None:
    """Data-loader workers leave the signals to the training process: a scheduler signalling the
    whole process group must not kill a worker under the step that is finishing."""
    for number in WORKER_IGNORED:
        signal.signal(number, signal.SIG_IGN)


class PreemptionWatch:
    """Within the block, SIGTERM and `extra` set a flag instead of ending the process (in the main
    thread; elsewhere Python cannot install handlers and the watch stays idle)."""

    def __init__(self, extra: str | None = None):
        self.signals = [signal.SIGTERM] + [s for s in [parse_signal(extra)] if s and s != signal.SIGTERM]
        self.received: signal.Signals | None = None
        self._previous: dict = {}

    def _handle(self, number, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(number)
            logger.warning("received %s: stopping after the current step", self.received.name)

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def stop_now(self, env: ddp.DistEnv, device: torch.device) -> bool:
        """Whether any rank was signalled (the same answer on every rank)."""
        return ddp.any_rank(self.received is not None, env, device)

    def stop(self, run_dir, state: TrainerState, env: ddp.DistEnv) -> Preempted:
        """The error to raise once rank 0 has saved `last/` (every rank waits for it here: torchrun
        ends the other ranks as soon as one exits)."""
        ddp.barrier(env)
        name = self.received.name if self.received is not None else "a signal to another rank"
        message = (f"stopped by {name} at {state.position()}: {run_dir / 'last'} holds the exact state; continue "
                   f"with `clipmg train --resume {run_dir}`")
        logger.warning(message)
        return Preempted(message)
