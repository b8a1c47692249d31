"""`TrainerState`: where a run stands (epoch, step, best value, history), the part of
`trainer_state.pt` that `--resume` and preemption read.

It is saved as a dict of plain values under the file's `trainer` key, because the file is loaded
with `torch.load(..., weights_only=True)`, which refuses any class; `from_dict` reads what
earlier versions saved there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class TrainerState:
    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # batches of the current epoch already trained on
    global_step: int = 0  # optimizer steps since the start
    best: float | None = None  # the best monitored validation value so far
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)  # one row per finished epoch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainerState:
        """The state saved by this or an earlier version (missing keys take their defaults, keys
        this version does not know are dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{key: value for key, value in data.items() if key in names})
        state.history = list(state.history)
        return state

    def finish_epoch(self, row: dict, value: float, improved: bool) -> None:
        """Record the epoch just finished (its history `row`, the monitored `value`)."""
        self.epoch, self.step_in_epoch = row["epoch"], 0
        self.history.append(row)
        if improved:
            self.best, self.best_epoch, self.epochs_without_improvement = value, row["epoch"], 0
        else:
            self.epochs_without_improvement += 1

    def best_row(self) -> dict:
        """The history row of the best epoch (the last one when none was best, {} before any)."""
        return next((row for row in self.history if row["epoch"] == self.best_epoch),
                    self.history[-1] if self.history else {})

    def position(self) -> str:
        """Where training stands, as a message says it (epochs counted from 1)."""
        return f"epoch {self.epoch + 1}, step {self.step_in_epoch} (global step {self.global_step})"
