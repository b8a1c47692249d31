"""Synthetic iMiGUE-like demo data: drawn press-conference frames in the real layout.

`make_demo_data(out)` writes

    OUT/Clip_label.csv                 id,name for the first K real iMiGUE classes (raw quirks)
    OUT/training/train.xlsx            Path, Class, Video ID, Frame ID, Caption
    OUT/training/<class>/<clip>.<frame>.jpg

Frames are drawn by `clipmg.synthetic.figures`. Frames of a clip are near-duplicates, as in the
real data, so a random frame split leaks. Clip counts per class are Zipf-like (at least 2 clips
per class). Everything is deterministic given the seed. With `motion=True`, classes 1-4 are
movements whose single frames do not tell them apart (`clipmg.synthetic.motion`). With
`subjects=N`, the clips are shared out among N people, each with one look (framing, skin,
clothes, room) across all their clips, and the metadata gets a `Subject` column, so a subject
split tests on people never seen in training.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
from PIL import Image

from clipmg.errors import DataError
from clipmg.synthetic.figures import SUPERSAMPLE, clip_look, draw_frame, finish_frame
from clipmg.synthetic.motion import MIN_MOTION_FRAMES, MOTIONS, motion_frames
from clipmg.synthetic.poses import IMIGUE_RAW_CLASS_NAMES
from clipmg.utils import atomic_path, progress

FIRST_CLIP_ID = 1000
PARALLEL_FROM_FRAMES = 2000
# Clip counts per class fall off as 1/rank**ZIPF_EXPONENT: clearly imbalanced (about 4x
# between the largest and smallest of 12 classes) but every class stays learnable.
ZIPF_EXPONENT = 0.6
SUBJECT_STREAM = 7  # seeds the people's looks apart from the clips' own draws


@dataclass(frozen=True)
class ClipJob:
    class_id: int
    clip_id: int
    frames: int
    subject: int | None = None


def person_seed(seed: int, subject: int | None) -> list[int] | None:
    return None if subject is None else [seed, SUBJECT_STREAM, subject]


def _still_frames(class_id: int, frames: int, rng, canvas: int, person_seed=None):
    look = clip_look(class_id, rng, canvas, person_seed=person_seed)
    for _ in range(frames):
        yield draw_frame(look, rng, canvas)


def _render_clip(job: ClipJob, image_root: str, size: int, seed: int, image_format: str,
                 motion: bool = False) -> int:
    rng = np.random.default_rng([seed, job.clip_id])
    canvas = size * SUPERSAMPLE
    frames = motion_frames if motion and job.class_id in MOTIONS else _still_frames
    drawn = frames(job.class_id, job.frames, rng, canvas, person_seed=person_seed(seed, job.subject))
    folder = os.path.join(image_root, str(job.class_id))
    for frame, image in enumerate(drawn):
        pixels = finish_frame(image, rng, size)
        path = os.path.join(folder, f"{job.clip_id}.{frame}.{image_format}")
        if image_format == "jpg":
            Image.fromarray(pixels).save(path, quality=90)
        else:
            Image.fromarray(pixels).save(path)
    return job.frames


def _render_star(args) -> int:
    return _render_clip(*args)


def clips_per_class(classes: int, clips: int, rng) -> np.ndarray:
    """Zipf-like clip counts (1/rank**ZIPF_EXPONENT), every class at least 2, summing to `clips`."""
    ranks = rng.permutation(classes) + 1
    weights = 1.0 / ranks**ZIPF_EXPONENT
    spare = clips - 2 * classes
    shares = weights / weights.sum() * spare
    counts = np.floor(shares).astype(int)
    leftover = spare - counts.sum()
    counts[np.argsort(-(shares - counts))[:leftover]] += 1
    return counts + 2


def make_demo_data(
    out: str | os.PathLike,
    classes: int = 12,
    clips: int = 240,
    frames_per_clip: int = 4,
    size: int = 112,
    seed: int = 0,
    image_format: str = "jpg",
    workers: int | None = None,
    motion: bool = False,
    subjects: int | None = None,
) -> dict:
    """Write a demo dataset in the iMiGUE layout under `out`; returns what was written.

    Classes are the first `classes` iMiGUE classes (ids 1..K). Clip ids start at 1000 and
    are unique; frame ids are 0..frames_per_clip-1, in time order. Large sets are drawn by
    `workers` processes (default: all cores); the output does not depend on their number.
    `motion=True` (at least 4 classes and 8 frames per clip) makes classes 1-4 movements that
    only the order of a clip's frames tells apart (`clipmg.synthetic.motion.MOTIONS`); without
    it every class is a still pose, and the output is the same as it always was. `subjects=N`
    shares the clips out among N people with one look each (a `Subject` column, 1..N).
    """
    _check_demo_arguments(classes, clips, frames_per_clip, size, image_format, motion, subjects)
    start = time.perf_counter()
    out = Path(out)
    image_root = out / "training"
    rng = np.random.default_rng(seed)
    jobs = _plan_clips(classes, clips, frames_per_clip, rng, subjects, seed)
    for class_id in range(1, classes + 1):
        (image_root / str(class_id)).mkdir(parents=True, exist_ok=True)
    workers = _render_all(jobs, image_root, size, seed, image_format, workers, motion)
    labels_path = _write_labels(out, classes)
    metadata_path = _write_metadata(image_root, jobs, image_format)
    seconds = time.perf_counter() - start
    frames = sum(job.frames for job in jobs)
    class_ids = np.array([job.class_id for job in jobs])
    return {
        "out": str(out),
        "metadata": str(metadata_path),
        "labels": str(labels_path),
        "image_root": str(image_root),
        "classes": classes,
        "clips": len(jobs),
        "frames": frames,
        "frames_per_clip": frames_per_clip,
        "image_size": size,
        "image_format": image_format,
        "seed": seed,
        "motion": {c: m.description for c, m in MOTIONS.items() if c <= classes} if motion else {},
        "subjects": subjects,
        "class_clips": {int(c): int((class_ids == c).sum()) for c in range(1, classes + 1)},
        "class_frames": {
            int(c): int(sum(j.frames for j in jobs if j.class_id == c))
            for c in range(1, classes + 1)
        },
        "workers": workers,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 1) if seconds > 0 else None,
    }


def _check_demo_arguments(classes, clips, frames_per_clip, size, image_format, motion=False,
                          subjects=None) -> None:
    if subjects is not None and not 1 <= subjects <= clips:
        raise DataError(f"demo data: subjects must be 1..clips ({clips}), got {subjects}")
    if not 1 <= classes <= len(IMIGUE_RAW_CLASS_NAMES):
        raise DataError(
            f"demo data: classes must be 1..{len(IMIGUE_RAW_CLASS_NAMES)}, got {classes}"
        )
    if clips < 2 * classes:
        raise DataError(
            f"demo data: need at least 2 clips per class ({2 * classes}), got clips={clips}"
        )
    if frames_per_clip < 1:
        raise DataError(f"demo data: frames_per_clip must be at least 1, got {frames_per_clip}")
    if size < 32:
        raise DataError(f"demo data: size must be at least 32 pixels, got {size}")
    if image_format not in ("jpg", "png"):
        raise DataError(f"demo data: image_format must be 'jpg' or 'png', got {image_format!r}")
    if motion and (classes < len(MOTIONS) or frames_per_clip < MIN_MOTION_FRAMES):
        raise DataError(f"demo data: motion needs at least {len(MOTIONS)} classes and {MIN_MOTION_FRAMES} "
                        f"frames per clip, got {classes} classes and frames_per_clip={frames_per_clip}")


def _plan_clips(classes: int, clips: int, frames_per_clip: int, rng, subjects: int | None = None,
                seed: int = 0) -> list[ClipJob]:
    counts = clips_per_class(classes, clips, rng)
    class_of_clip = np.repeat(np.arange(1, classes + 1), counts)
    clip_ids = FIRST_CLIP_ID + rng.permutation(clips)  # ids say nothing about the class
    subject_of_clip = _subjects_of_clips(clips, subjects, seed)
    jobs = [ClipJob(int(c), int(i), frames_per_clip, s) for c, i, s in zip(class_of_clip, clip_ids, subject_of_clip)]
    return sorted(jobs, key=lambda job: (job.class_id, job.clip_id))


def _subjects_of_clips(clips: int, subjects: int | None, seed: int) -> list[int | None]:
    """Every person gets clips of many classes: clip k (in class order) goes to a shuffled person."""
    if subjects is None:
        return [None] * clips
    order = np.random.default_rng([seed, SUBJECT_STREAM]).permutation(clips)
    return [int(k % subjects) + 1 for k in order]


def _render_all(jobs, image_root: Path, size, seed, image_format, workers, motion=False) -> int:
    frames = sum(job.frames for job in jobs)
    workers = workers or os.cpu_count() or 1
    if frames < PARALLEL_FROM_FRAMES:
        workers = 1
    tasks = [(job, str(image_root), size, seed, image_format, motion) for job in jobs]
    bar = progress(total=frames, desc="drawing demo frames", unit="frame")
    if workers == 1:
        for task in tasks:
            bar.update(_render_star(task))
    else:
        # fork: workers start at once and need nothing from the parent but these arguments.
        context = get_context("fork" if "fork" in get_all_start_methods() else None)
        with context.Pool(workers) as pool:
            for done in pool.imap_unordered(_render_star, tasks, chunksize=16):
                bar.update(done)
    bar.close()
    return workers


def _write_labels(out: Path, classes: int) -> Path:
    """Clip_label.csv as users have it: CRLF line ends, raw names with trailing spaces."""
    path = out / "Clip_label.csv"
    lines = ["id,name"] + [f"{i},{IMIGUE_RAW_CLASS_NAMES[i - 1]}" for i in range(1, classes + 1)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def _write_metadata(image_root: Path, jobs: list[ClipJob], image_format: str) -> Path:
    import openpyxl

    path = image_root / "train.xlsx"
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("train")
    with_subjects = any(job.subject is not None for job in jobs)
    sheet.append(["Path", "Class", "Video ID", "Frame ID", "Caption"] + (["Subject"] if with_subjects else []))
    for job in jobs:
        caption = IMIGUE_RAW_CLASS_NAMES[job.class_id - 1]
        for frame in range(job.frames):
            row = [f"{job.class_id}/{job.clip_id}.{frame}.{image_format}", job.class_id, job.clip_id, frame, caption]
            sheet.append(row + ([job.subject] if with_subjects else []))
    with atomic_path(path) as tmp:
        workbook.save(tmp)
    return path
