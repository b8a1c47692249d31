"""Clip predictions beside the per-frame ones (test.py, `clipmg evaluate`): one row per clip.

A clip model (`clipmg.models.ClipModel`) with the mean head classifies each clip from the mean
of all its frames' features; with another head, from K of its frames, the centres of K uniform
segments in `Frame ID` order (`clipmg.data.clip_positions`, as its validation did). Any other
model's clip prediction is the mean of its frames' logits. Each frame is encoded once: its
features give its own prediction and, when its clip's prediction reads it, the clip's.

Frames arrive in chunks (test.py streams the CSV) and a clip's frames may be anywhere in it, so
the clips are planned first (`ClipPlanner`, fed by test.py's first pass over the CSV, which
already reads every row to check the labels): each clip's frame count, label and, for a clip
model with K frames, the rows of its K frames. While planning, three numbers per row are held;
after it, K row numbers per clip. During the second pass (`ClipCollector`) only the clips whose
frames are still to come hold state (their K frame features, or a running sum of features or
logits); a finished clip keeps its C logits. Memory grows with the clips, not the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipmg import data as cdata
from clipmg.inference.classifier import Classifier
from clipmg.inference.scoring import prediction_frame


def clip_keys(videos) -> np.ndarray:
    """Clip ids as text (stripped); empty: the row belongs to no clip."""
    return pd.Series(videos).astype(str).str.strip().to_numpy(dtype=object)


@dataclass
class ClipPlan:
    keys: list[str]  # clip ids, in order of first appearance
    n_frames: np.ndarray  # (clips,) rows of each clip
    targets: np.ndarray  # (clips,) class index of each clip's first frame (frame order); -1 unlabelled
    clip_frames: int | None  # K of a clip model, None for a frame model (mean of the frames' logits)
    whole_clip: bool = False  # a clip model that pools every frame (its mean head)
    slots: np.ndarray | None = None  # (clips, K) row positions of the K frames a clip model reads, else None
    slot_names: list[str] = field(default_factory=list)  # per clip: its K frames' ids, space-separated
    index_of: dict[str, int] = field(default_factory=dict)

    def codes(self, videos) -> np.ndarray:
        """Clip index per row (-1: no clip)."""
        return np.array([self.index_of.get(key, -1) if key else -1 for key in clip_keys(videos)], dtype=np.int64)

    def wanted(self, start: int, count: int) -> np.ndarray | None:
        """A clip model: which of the rows start..start+count-1 are among the frames it reads."""
        if self.whole_clip:
            return np.ones(count, dtype=bool)
        if self.slots is None:
            return None
        rows = self.slots.ravel()
        mask = np.zeros(count, dtype=bool)
        mask[rows[(rows >= start) & (rows < start + count)] - start] = True
        return mask


class ClipPlanner:
    """Collects (clip id, frame id, row position, label) chunk by chunk, then makes the plan."""

    def __init__(self):
        self.index_of: dict[str, int] = {}
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, videos, frames, positions: np.ndarray, targets: np.ndarray) -> None:
        """`frames`: Frame IDs (ordered as numbers; not numbers: by row, after the numbered ones),
        or None to keep the row order."""
        keys = clip_keys(videos)
        codes = np.array([self.index_of.setdefault(key, len(self.index_of)) if key else -1 for key in keys],
                         dtype=np.int64)
        order = (np.full(len(keys), np.nan) if frames is None
                 else pd.to_numeric(pd.Series(frames).astype(str).str.strip(), errors="coerce").to_numpy(float))
        has = codes >= 0
        self.parts.append((codes[has], order[has], np.asarray(positions, dtype=np.int64)[has],
                           np.asarray(targets, dtype=np.int64)[has]))

    def plan(self, clip_frames: int | None, whole_clip: bool = False) -> ClipPlan:
        """The plan of a frame model (`clip_frames` None) or a clip model reading K frames of
        each clip, or with `whole_clip` every frame."""
        if self.parts:
            codes, order, positions, targets = (np.concatenate(column) for column in zip(*self.parts))
        else:
            codes, order = np.zeros(0, dtype=np.int64), np.zeros(0)
            positions, targets = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        sort = np.lexsort((positions, order, codes))
        codes, order, positions, targets = codes[sort], order[sort], positions[sort], targets[sort]
        count = len(self.index_of)
        starts = np.searchsorted(codes, np.arange(count))
        n_frames = np.diff(np.append(starts, len(codes))).astype(np.int64)
        whole_clip = bool(clip_frames and whole_clip)
        plan = ClipPlan(list(self.index_of), n_frames, targets[starts[n_frames > 0]].astype(np.int64), clip_frames,
                        whole_clip, index_of=dict(self.index_of))
        if clip_frames and not whole_clip:
            picks = np.stack([starts[c] + cdata.clip_positions(int(n_frames[c]), clip_frames) for c in range(count)]
                             ) if count else np.zeros((0, clip_frames), dtype=np.int64)
            plan.slots = positions[picks]
            plan.slot_names = [" ".join(_frame_name(order[i], positions[i]) for i in row) for row in picks]
        self.parts = []
        return plan


def _frame_name(order: float, position: int) -> str:
    if np.isnan(order):
        return f"row{position + 2}"
    return str(int(order)) if float(order).is_integer() else repr(float(order))


def plan_from_frames(frames: pd.DataFrame, targets: np.ndarray, clip_frames: int | None,
                     whole_clip: bool = False) -> ClipPlan:
    """The plan of a standard metadata DataFrame (positions: its rows 0..n-1)."""
    planner = ClipPlanner()
    planner.add(frames["video_id"].to_numpy(), frames["frame_id"].to_numpy(), np.arange(len(frames)), targets)
    return planner.plan(clip_frames, whole_clip)


class ClipCollector:
    """Gathers each clip's frames as their chunks are scored and classifies a clip when its last
    frame has been seen."""

    def __init__(self, plan: ClipPlan, classifier: Classifier):
        self.plan, self.classifier = plan, classifier
        count = len(plan.keys)
        self.logits = torch.full((count, classifier.num_classes), float("nan"))
        self.frames_used = np.zeros(count, dtype=np.int64)
        self.pending = plan.n_frames.copy() if plan.slots is None else np.full(count, plan.clip_frames)
        self.sums: dict[int, torch.Tensor] = {}  # running sums of logits (frame model) or features (whole clips)
        self.slot_features: dict[int, dict[int, torch.Tensor]] = {}  # clip model: slot -> frame features
        self.slots_at: dict[int, list[tuple[int, int]]] = {}
        if plan.slots is not None:
            for clip, row in enumerate(plan.slots):
                for slot, position in enumerate(row.tolist()):
                    self.slots_at.setdefault(position, []).append((clip, slot))

    def add(self, start: int, codes: np.ndarray, scored) -> None:
        """Rows start..start+n-1 (clip index per row `codes`) have been scored."""
        if self.plan.slots is None:
            self._add_frames(codes, scored)
        else:
            self._add_slots(start, len(codes), scored)

    def _add_frames(self, codes: np.ndarray, scored) -> None:
        """Sum each clip's frames (their logits, or a whole-clip model's features); a clip whose
        last frame this was gets the mean (scored by the temporal head for whole clips)."""
        valid = codes >= 0
        clips, inverse = np.unique(codes[valid], return_inverse=True)
        read = scored.ok[valid]
        rows = np.bincount(inverse, minlength=len(clips))
        read_rows = np.bincount(inverse[read], minlength=len(clips))
        values = self._frame_values(valid & scored.ok, scored)
        sums = torch.zeros(len(clips), values.shape[1]).index_add_(0, torch.from_numpy(inverse[read]), values)
        finished = []
        for i, clip in enumerate(clips.tolist()):
            if read_rows[i]:
                self.sums[clip] = self.sums[clip] + sums[i] if clip in self.sums else sums[i]
                self.frames_used[clip] += int(read_rows[i])
            self.pending[clip] -= int(rows[i])
            if self.pending[clip] == 0 and clip in self.sums:
                finished.append(clip)
        if not finished:
            return
        means = torch.stack([self.sums.pop(clip) / self.frames_used[clip] for clip in finished])
        self.logits[finished] = self.classifier.clip_logits(means[:, None]) if self.plan.whole_clip else means

    def _frame_values(self, rows: np.ndarray, scored) -> torch.Tensor:
        """What is summed of the chunk's `rows` (a mask): logits, or a whole-clip model's features."""
        if not self.plan.whole_clip:
            return scored.logits[torch.from_numpy(rows)]
        picked = np.flatnonzero(rows).tolist()
        if not picked:
            return torch.zeros(0, self.classifier.model.feature_dim)
        return torch.stack([scored.features[i] for i in picked]).float()

    def _add_slots(self, start: int, count: int, scored) -> None:
        done = []
        for position in range(start, start + count):
            for clip, slot in self.slots_at.pop(position, ()):
                if scored.ok[position - start]:
                    self.slot_features.setdefault(clip, {})[slot] = scored.features[position - start]
                self.pending[clip] -= 1
                if self.pending[clip] == 0:
                    done.append(clip)
        ready = [clip for clip in done if clip in self.slot_features]
        if not ready:
            return
        stacked = []
        for clip in ready:
            features = self.slot_features.pop(clip)
            read = sorted(features)
            fill = np.array(read)[cdata.clip_positions(len(read), self.plan.clip_frames)]
            stacked.append(torch.stack([features[slot] for slot in fill.tolist()]))
            self.frames_used[clip] = len(set(self.plan.slots[clip, read].tolist()))
        self.logits[ready] = self.classifier.clip_logits(torch.stack(stacked))

    @property
    def classified(self) -> np.ndarray:
        return ~torch.isnan(self.logits[:, 0]).numpy() if len(self.logits) else np.zeros(0, dtype=bool)

    def model_metrics_input(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(clip logits, clip targets) of the labelled clips a clip model classified."""
        if not self.plan.clip_frames:
            return None
        use = self.classified & (self.plan.targets >= 0)
        if not use.any():
            return None
        return self.logits[torch.from_numpy(use)], torch.from_numpy(self.plan.targets[use])

    def table(self, topk: int, video_column: str, labelled: bool) -> pd.DataFrame:
        """One row per clip: its id, true class (when labelled), prediction, top-k, frames."""
        status = np.where(self.classified, "ok", "unreadable").astype(object)
        columns = {video_column: self.plan.keys}
        if labelled:
            targets = self.plan.targets
            ids = np.asarray(self.classifier.class_ids)[np.maximum(targets, 0)]
            columns["true_class"] = pd.Series(ids, dtype="Int64").mask(targets < 0)
            columns["true_name"] = np.where(targets >= 0, np.asarray(self.classifier.class_names, dtype=object)
                                            [np.maximum(targets, 0)], "")
        table = pd.concat([pd.DataFrame(columns), prediction_frame(self.logits, status, self.classifier, topk)],
                          axis=1)
        table.insert(len(table.columns) - 1, "frames", self.plan.n_frames)
        table.insert(len(table.columns) - 1, "frames_used", self.frames_used)
        if self.plan.slots is not None:
            table.insert(len(table.columns) - 1, "sampled_frames", self.plan.slot_names)
        return table


def clip_predictions_path(output: Path) -> Path:
    """`clip_<name>` beside the per-frame predictions (predictions.csv -> clip_predictions.csv)."""
    return output.with_name(f"clip_{output.name}")
