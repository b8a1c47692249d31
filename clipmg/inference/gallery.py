"""The misclassified frames an HTML report shows: a bounded sample, kept while predictions stream.

Per true class, the `per_class` frames predicted wrong with the highest probability for the
wrong class (the most confident mistakes) are kept, with their top-k classes; every mistake is
counted. Memory is bounded by `per_class` x classes, whatever the number of rows.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipmg.inference.batches import resolve_image_path

GALLERY_TOPK = 3


class MisclassifiedGallery:
    def __init__(self, per_class: int, num_classes: int, topk: int = GALLERY_TOPK):
        self.per_class, self.topk = int(per_class), int(topk)
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self._heaps: list[list] = [[] for _ in range(num_classes)]
        self._order = itertools.count()  # ties: the earlier row wins

    def add(self, logits: torch.Tensor, targets: np.ndarray, paths: Sequence[str], rows: Sequence[int]) -> None:
        """Scored rows (`targets` -1 for rows without a label or a prediction) of one chunk."""
        use = targets >= 0
        if not use.any() or self.per_class <= 0:
            return
        index = np.flatnonzero(use)
        probs = torch.softmax(logits[torch.from_numpy(index)].float(), dim=1)
        top_p, top_i = probs.topk(min(self.topk, probs.shape[1]), dim=1)
        top_p, top_i = top_p.numpy(), top_i.numpy()
        wrong = top_i[:, 0] != targets[index]
        np.add.at(self.counts, targets[index][wrong], 1)
        for j in np.flatnonzero(wrong):
            position = int(index[j])
            entry = {"path": str(paths[position]), "row": int(rows[position]), "true": int(targets[position]),
                     "top": [[int(c), float(p)] for c, p in zip(top_i[j], top_p[j])]}
            heap = self._heaps[entry["true"]]
            item = (float(top_p[j, 0]), -next(self._order), entry)
            if len(heap) < self.per_class:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)

    def to_dict(self, roots: Sequence[Path] = ()) -> dict:
        """JSON-able: per_class, topk, counts (mistakes per true class index), and the kept
        entries (path as given, `file` as found under `roots`, row, true index, top [index,
        probability] pairs), grouped by true class, most confident first."""
        entries = []
        for heap in self._heaps:
            for _, _, entry in sorted(heap, key=lambda item: item[:2], reverse=True):
                found = resolve_image_path(entry["path"], list(roots)) if roots else None
                entries.append({**entry, "file": str(found) if found else entry["path"]})
        return {"per_class": self.per_class, "topk": self.topk, "counts": self.counts.tolist(), "entries": entries}
