"""What the lab computes, with no web server: a checkpoint's frames encoded once, a prompt set
that can be edited, and every answer the page shows from those two.

Prompts are the checkpoint's model: templates shared by all classes (a `{}` slot) and, per
class, the subject that fills the slot (its name, or a description). Each text is encoded once
and kept; a class's embedding is the normalised mean of its templates' (as
`build_class_embeddings` computes it), and the metrics of a set are `clipmg prompts evaluate`'s
(`metrics_from_logits`), so the two agree on the same set.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from clipmg import data as cdata
from clipmg.errors import DataError, ModelError
from clipmg.inference import DEFAULT_BATCH_SIZE, Classifier, resolve_image_path, thumbnail
from clipmg.inference.gallery import MisclassifiedGallery
from clipmg.jobs.prompt_eval import load_classifier, metrics_from_logits, slug
from clipmg.lab.features import LabFrames, default_lab_dir, load_frames
from clipmg.metrics import confusion, per_class_report
from clipmg.prompts import (
    PROMPTS_DIR,
    LearnedPromptSet,
    PromptSet,
    check_templates,
    load_prompt_set,
)
from clipmg.utils import atomic_write_text

CHECKPOINT_SET = "checkpoint"
THUMB_SIZE = 96
TEXT_BATCH = 256


@dataclass(frozen=True)
class View:
    """The answers of one prompt set, computed together and replaced whole when it changes."""

    prompt_set: PromptSet
    logits: torch.Tensor  # (n, C) float32
    probs: np.ndarray  # (n, C)
    preds: np.ndarray  # (n,) class index
    metrics: dict
    per_class: list[dict]
    confusion: np.ndarray  # (C, C) true x predicted


class Lab:
    def __init__(self, classifier: Classifier, frames: LabFrames, prompt_set: PromptSet | None = None,
                 out_dir: str | os.PathLike | None = None):
        if classifier.class_embeddings is None:
            raise ModelError(f"{classifier.description} has a classifier head: its scores do not depend on "
                             "prompts, and the lab edits prompts")
        self.classifier, self.frames = classifier, frames
        self.encoded = frames.encoded
        self.out_dir = Path(out_dir) if out_dir is not None else default_lab_dir(classifier.checkpoint)
        self._texts: dict[str, torch.Tensor] = {}  # text -> its normalised embedding (D,)
        self._lock = threading.RLock()  # prompt sets and the text cache change under it
        self.last_encoded = 0
        self.thumbnail_jpeg = functools.lru_cache(maxsize=4096)(self._thumbnail_jpeg)
        start = prompt_set or classifier.prompt_set
        self.view = self._compute(start if not isinstance(start, LearnedPromptSet) else PromptSet(), fresh=True)

    @classmethod
    def open(cls, checkpoint: str | os.PathLike, metadata: str | os.PathLike, *, labels=None, split=None,
             subset: str = "val", prompts: str | None = None, image_root=None, columns: cdata.Columns | None = None,
             cache_dir=None, use_cache: bool = True, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
             workers: int | None = None, skip_missing: bool = False) -> Lab:
        """A checkpoint on the frames of `metadata` (or `split`'s `subset`), starting from the
        prompt set `prompts` (default the checkpoint's own)."""
        classifier = load_classifier(checkpoint, labels=labels, device=device)
        prompt_set = editable(load_prompt_set(prompts), prompts) if prompts else None
        frames = load_frames(classifier, metadata, split=split, subset=subset, image_root=image_root,
                             columns=columns, cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size,
                             workers=workers, skip_missing=skip_missing)
        return cls(classifier, frames, prompt_set, out_dir=cache_dir)

    # ------------------------------------------------------------------ prompts and metrics
    @property
    def class_ids(self) -> list[int]:
        return self.classifier.class_ids

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    def set_prompts(self, templates: list[str], subjects: dict | None = None, name: str = "edited") -> View:
        """A new prompt set: `templates` for all classes, `subjects` (class id -> the text that fills
        the slot; a class left out, or given its own name, keeps its name)."""
        templates = check_templates([str(t) for t in templates], "the lab's templates")
        known = {str(cid): n for cid, n in zip(self.class_ids, self.class_names)}
        descriptions = {}
        for cid, subject in (subjects or {}).items():
            if str(cid) not in known:
                raise DataError(f"class id {cid} is not one of the checkpoint's ({', '.join(known)})")
            subject = str(subject).strip()
            if subject and subject != known[str(cid)]:
                descriptions[str(cid)] = subject
        return self.use(PromptSet(name=name, templates=templates, descriptions=descriptions))

    def use(self, prompt_set: PromptSet, fresh: bool = False) -> View:
        """Score `prompt_set`; `fresh` encodes all its texts anew, as `clipmg prompts evaluate` does
        (sets loaded whole), else only the texts not seen before (edits)."""
        with self._lock:
            self.view = self._compute(prompt_set, fresh)
        return self.view

    def load_prompts(self, name: str) -> View:
        """A set by name (one of `prompt_sets`: the page reads no other file): `checkpoint` (the
        checkpoint's own), a set of prompts/, or a set saved by the lab."""
        known = self.prompt_sets()
        if name not in known:
            raise DataError(f"prompt set {name!r} is not one of the lab's ({', '.join(known)})")
        if name == CHECKPOINT_SET:
            return self.use(editable(self.classifier.prompt_set, name), fresh=True)
        saved = self.out_dir / "prompts" / f"{name}.yaml"
        return self.use(editable(load_prompt_set(saved if saved.is_file() else name), name), fresh=True)

    def prompt_sets(self) -> list[str]:
        names = [CHECKPOINT_SET] if not isinstance(self.classifier.prompt_set, LearnedPromptSet) else []
        names += sorted({p.stem for p in PROMPTS_DIR.glob("*") if p.suffix in (".yaml", ".yml", ".txt")})
        saved = self.out_dir / "prompts"
        names += sorted(p.stem for p in saved.glob("*.yaml") if p.stem not in names) if saved.is_dir() else []
        return names

    def save_prompts(self, name: str) -> dict[str, Path]:
        """The current set as ``<out>/prompts/<name>.yaml`` (a prompt-set file `clipmg prompts
        evaluate --prompts` and test.py take; its metrics in a comment) and its metrics as JSON,
        scored afresh as `clipmg prompts evaluate` scores a file."""
        view, stem = self.use(PromptSet(name=slug(name), templates=list(self.view.prompt_set.templates),
                                        descriptions=dict(self.view.prompt_set.descriptions)), fresh=True), slug(name)
        folder = self.out_dir / "prompts"
        document = {"templates": list(view.prompt_set.templates),
                    "descriptions": {int(k) if k.isdigit() else k: v for k, v in view.prompt_set.descriptions.items()}}
        headline = ", ".join(f"{k} {view.metrics[k]:.4f}" for k in ("top1", "top5", "balanced_accuracy", "macro_f1")
                             if isinstance(view.metrics.get(k), float) and not math.isnan(view.metrics[k]))
        header = (f"# Prompt set saved by `clipmg lab` for {self.classifier.description}\n"
                  f"# on {len(self.encoded)} frames of {self.frames.source}: {headline}\n")
        files = {"prompts": folder / f"{stem}.yaml", "metrics": folder / f"{stem}.json"}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(files["prompts"], header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
        atomic_write_text(files["metrics"], json.dumps(jsonable({
            "prompts": str(files["prompts"]), "checkpoint": self.classifier.description,
            "frames": self.frames.source, "metrics": view.metrics, "per_class": view.per_class}), indent=2) + "\n")
        return files

    def _compute(self, prompt_set: PromptSet, fresh: bool = False) -> View:
        start = time.perf_counter()
        table = self.class_embeddings(prompt_set, fresh)
        logits = self.classifier.logits_from_features(self.encoded.scoring, table)
        metrics = metrics_from_logits(logits, self.encoded, self.classifier.num_classes)
        targets = torch.from_numpy(self.encoded.targets)
        report = per_class_report(logits, targets, self.class_names, self.class_ids)
        metrics["seconds"] = time.perf_counter() - start
        return View(prompt_set=prompt_set, logits=logits, probs=torch.softmax(logits, dim=1).numpy(),
                    preds=logits.argmax(dim=1).numpy(), metrics=metrics,
                    per_class=report.to_dict(orient="records"),
                    confusion=confusion(logits, targets, self.classifier.num_classes))

    def texts(self, prompt_set: PromptSet) -> list[list[str]]:
        return [prompt_set.texts_for(name, cid) for name, cid in zip(self.class_names, self.class_ids)]

    def class_embeddings(self, prompt_set: PromptSet, fresh: bool = False) -> torch.Tensor:
        """(C, D) as `build_class_embeddings`, encoding only the texts not seen before; `fresh`:
        all the set's texts in `build_class_embeddings`' batches, so that the table is its own to
        the bit (a batch's rows differ from the same texts encoded apart by float rounding)."""
        per_class = self.texts(prompt_set)
        flat = [text for texts in per_class for text in texts]
        if fresh:
            self.last_encoded = len(set(flat))
            encoded = self._encode(flat)
            self._texts.update(zip(flat, encoded))
            per_template = encoded.view(len(per_class), len(prompt_set.templates), -1)
        else:
            self.encode_texts(flat)
            per_template = torch.stack([torch.stack([self._texts[t] for t in texts]) for texts in per_class])
        return F.normalize(per_template.mean(dim=1), dim=-1).float()

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        model = self.classifier.model
        return torch.cat([model.encode_text(texts[i:i + TEXT_BATCH], normalize=True).float().cpu()
                          for i in range(0, len(texts), TEXT_BATCH)])

    def encode_texts(self, texts: list[str], count: bool = True) -> torch.Tensor:
        """(N, D) normalised text embeddings; each distinct text is encoded once per lab. `count`:
        `last_encoded` says how many were new (what a prompt edit cost)."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
            if missing:
                self._texts.update(zip(missing, self._encode(missing)))
            if count:
                self.last_encoded = len(missing)
            return torch.stack([self._texts[t] for t in texts]) if texts else torch.zeros(0)

    # ------------------------------------------------------------------ frames
    def frame(self, index: int, view: View | None = None) -> dict:
        view = view or self.view
        row = self.encoded.frames.iloc[index]
        target = int(self.encoded.targets[index])
        pred = int(view.preds[index])
        return {"index": int(index), "path": str(row["path"]), "row": int(row["row"]),
                "video_id": str(row["video_id"]), "frame_id": str(row["frame_id"]),
                "true": self._class(target), "pred": self._class(pred),
                "prob": float(view.probs[index, pred]), "correct": pred == target}

    def _class(self, index: int) -> dict | None:
        if index < 0:
            return None
        return {"index": index, "id": self.class_ids[index], "name": self.class_names[index]}

    def top(self, index: int, k: int = 3, view: View | None = None) -> list[dict]:
        view = view or self.view
        order = np.argsort(-view.probs[index])[:k]
        return [{**self._class(int(c)), "prob": float(view.probs[index, c])} for c in order]

    def _check_index(self, index: int) -> int:
        if not 0 <= int(index) < len(self.encoded):
            raise DataError(f"frame {index} is not one of the lab's {len(self.encoded)} frames")
        return int(index)

    def search(self, text: str, k: int = 24) -> list[dict]:
        """The `k` frames whose image embeddings are nearest the phrase's text embedding."""
        text = text.strip()
        if not text:
            raise DataError("search: type a phrase")
        query = self.encode_texts([text], count=False)[0].numpy()
        return self._nearest(self.encoded.embeddings @ query, k)

    def similar(self, index: int, k: int = 12) -> dict:
        """A frame's nearest frames (cosine of image embeddings, itself left out) and its top-k."""
        index = self._check_index(index)
        scores = self.encoded.embeddings @ self.encoded.embeddings[index]
        scores[index] = -np.inf
        view = self.view
        return {"frame": self.frame(index, view), "top": self.top(index, 5, view),
                "nearest": self._nearest(scores, k, view)}

    def _nearest(self, scores: np.ndarray, k: int, view: View | None = None) -> list[dict]:
        view = view or self.view
        k = max(0, min(int(k), len(scores)))
        best = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
        best = best[np.argsort(-scores[best], kind="stable")]
        return [{**self.frame(int(i), view), "score": float(scores[i])} for i in best if np.isfinite(scores[i])]

    def mistakes(self, true: int, pred: int | None = None, limit: int = 24) -> dict:
        """The most confident wrong predictions of the class of index `true` (as the HTML report's
        gallery picks them), only those predicted as `pred` when given; with their count."""
        view = self.view
        targets = self.encoded.targets
        for value in (true, pred):
            if value is not None and not 0 <= int(value) < self.classifier.num_classes:
                raise DataError(f"class index {value} is not one of 0..{self.classifier.num_classes - 1}")
        chosen = targets == int(true)
        if pred is not None:
            chosen &= view.preds == int(pred)
        gallery = MisclassifiedGallery(limit, self.classifier.num_classes)
        positions = np.arange(len(targets))  # in the gallery's row field: each entry's frame
        gallery.add(view.logits, np.where(chosen, targets, -1), self.encoded.frames["path"].to_numpy(), positions)
        entries = gallery.to_dict()["entries"]
        return {"true": self._class(int(true)), "pred": None if pred is None else self._class(int(pred)),
                "count": int(gallery.counts[int(true)]),
                "frames": [{**self.frame(e["row"], view), "top": self.top(e["row"], 3, view)} for e in entries]}

    # ------------------------------------------------------------------ clips
    def clips(self) -> list[dict]:
        """One entry per clip (`Video ID`): its true class, frames, and the prediction of the
        mean of its frames' logits (the metrics' clip level)."""
        view, frames = self.view, self.encoded.frames
        out = []
        for video, group in frames.groupby("video_id", sort=False):
            positions = group.index.to_numpy()
            mean = view.logits[torch.tensor(positions, dtype=torch.long)].mean(dim=0).softmax(dim=0).numpy()
            pred, target = int(mean.argmax()), int(self.encoded.targets[positions[0]])
            out.append({"video_id": str(video), "frames": len(positions), "true": self._class(target),
                        "pred": self._class(pred), "prob": float(mean[pred]), "correct": pred == target})
        return out

    def clip(self, video_id: str) -> dict:
        view, frames = self.view, self.encoded.frames
        group = frames[frames["video_id"].astype(str) == str(video_id)]
        if group.empty:
            raise DataError(f"no clip {video_id!r} among the lab's frames")
        group = group.sort_values("frame_id", key=_frame_order, kind="stable")
        positions = group.index.to_numpy()
        mean = view.logits[torch.tensor(positions, dtype=torch.long)].mean(dim=0).softmax(dim=0).numpy()
        order = np.argsort(-mean)[:3]
        return {"video_id": str(video_id), "true": self._class(int(self.encoded.targets[positions[0]])),
                "top": [{**self._class(int(c)), "prob": float(mean[c])} for c in order],
                "frames": [{**self.frame(int(i), view), "top": self.top(int(i), 3, view)} for i in positions]}

    # ------------------------------------------------------------------ page state and thumbnails
    def state(self) -> dict:
        """Everything the page shows about the current prompt set, JSON-able."""
        view = self.view
        texts = self.texts(view.prompt_set)
        classes = [{"index": i, "id": cid, "name": name, "subject": view.prompt_set.subject(name, cid),
                    "texts": texts[i]} for i, (cid, name) in enumerate(zip(self.class_ids, self.class_names))]
        return jsonable({
            "checkpoint": self.classifier.description, "frames": self.frames.source,
            "n_frames": len(self.encoded), "n_skipped": len(self.encoded.skipped),
            "features": {"cache": str(self.frames.cache_file) if self.frames.cache_file else None,
                         "from_cache": self.frames.from_cache, "seconds": self.frames.seconds},
            "prompts": {"name": view.prompt_set.name, "templates": list(view.prompt_set.templates),
                        "classes": classes},
            "sets": self.prompt_sets(), "metrics": view.metrics, "per_class": view.per_class,
            "confusion": view.confusion.tolist(), "encoded_texts": self.last_encoded})

    def _thumbnail_jpeg(self, index: int, size: int = THUMB_SIZE) -> bytes | None:
        """A JPEG of the frame's centre square, made on first request (None: image not found)."""
        from PIL import Image

        path = str(self.encoded.frames["path"].iat[self._check_index(index)])
        found = resolve_image_path(path, self.frames.roots)
        if found is None:
            return None
        buffer = io.BytesIO()
        Image.fromarray(thumbnail(cdata.load_image(found, max_size=2 * size), size)).save(buffer, format="JPEG",
                                                                                          quality=85)
        return buffer.getvalue()


def editable(prompt_set: PromptSet, source: str | None) -> PromptSet:
    if isinstance(prompt_set, LearnedPromptSet):
        raise DataError(f"prompt set {source} is learned (CoOp context vectors): the lab edits text prompts")
    return prompt_set


def _frame_order(values):
    numbers = values.astype(str).str.extract(r"(\d+)")[0].astype(float)
    return numbers.fillna(-1) if numbers.notna().any() else values.astype(str)


def jsonable(value):
    """NaN and infinities as None, numpy scalars as Python ones (for strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
