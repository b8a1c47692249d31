"""A keypoint table keyed by `Path`, stored beside the images, filled once and resumable.

Where: for images found under an image root, `<image root>/.clipmg_keypoints/` (in the iMiGUE
layout the root is the `training/` folder that holds `train.xlsx`, so the table sits beside the
metadata), keyed by the `Path` relative to that root; for absolute paths, the image's folder,
keyed by file name. A root that is not writable falls back to `~/.cache/clipmg/keypoints/`.
The training setting `keypoints` (a folder) overrides all of this: one table keyed by `Path` as
given. test.py and `clipmg predict` use the same rule with the checkpoint's training settings,
so keypoints of new frames are extracted once and kept beside those frames.

How: the table is a folder of `part-*.npz` files (`paths`, `keypoints`), each written
atomically after a chunk of frames, so a killed extraction loses at most one chunk and the next
run extracts only what is missing; `meta.json` records the vector layout and extractor settings.
When a run has extracted everything it asked for, the parts are merged into one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clipmg.errors import DataError, ImageError
from clipmg.pose.keypoints import (
    KEYPOINT_DIM,
    ExtractorSettings,
    KeypointExtractor,
    empty_keypoints,
)
from clipmg.utils import logger, progress

CACHE_DIR_NAME = ".clipmg_keypoints"
LAYOUT_VERSION = 1
CHUNK_FRAMES = 64


def user_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipmg" / "keypoints"


def default_cache_folder(root: Path) -> Path:
    """`<root>/.clipmg_keypoints`, or a folder of the user's cache when `root` is read-only."""
    root = Path(root)
    if os.access(root, os.W_OK) or os.access(root / CACHE_DIR_NAME, os.W_OK):
        return root / CACHE_DIR_NAME
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return user_cache_root() / digest


def normalise_key(path: str) -> str:
    return str(path).strip().replace("\\", "/")


class KeypointCache:
    """One folder of keypoint parts: `get(keys)`, `add(keys, vectors)`, `compact()`."""

    def __init__(self, folder: str | os.PathLike, settings: ExtractorSettings | None = None):
        self.folder = Path(folder)
        self.settings = (settings or ExtractorSettings()).to_dict()
        self._table: dict[str, np.ndarray] | None = None

    # ----------------------------------------------------------------- reading
    def table(self) -> dict[str, np.ndarray]:
        if self._table is None:
            self._check_meta()
            self._table = {}
            for part in self.parts():
                keys, vectors = self._read_part(part)
                self._table.update(zip(keys, vectors))
        return self._table

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz")) if self.folder.is_dir() else []

    def _read_part(self, part: Path) -> tuple[list[str], np.ndarray]:
        try:
            with np.load(part, allow_pickle=False) as data:
                keys, vectors = [str(k) for k in data["paths"]], data["keypoints"].astype(np.float32)
        except Exception as error:  # a torn or foreign file: name it, the user deletes it
            raise DataError(f"keypoint cache part {part} cannot be read ({error}); delete it and run again") from error
        if vectors.ndim != 2 or vectors.shape[1] != KEYPOINT_DIM or len(keys) != len(vectors):
            raise DataError(f"keypoint cache part {part} holds {vectors.shape} keypoints for {len(keys)} paths; "
                            f"expected (N, {KEYPOINT_DIM}); delete it and run again")
        return keys, vectors

    def _check_meta(self) -> None:
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            return
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise DataError(f"keypoint cache {meta_path} is not valid JSON ({error}); delete the folder") from error
        if meta.get("layout") != LAYOUT_VERSION or meta.get("keypoint_dim") != KEYPOINT_DIM:
            raise DataError(f"keypoint cache {self.folder} was written with layout {meta.get('layout')} "
                            f"({meta.get('keypoint_dim')} values per frame), this version uses layout "
                            f"{LAYOUT_VERSION} ({KEYPOINT_DIM}); delete the folder to extract again")
        if meta.get("extractor") != self.settings:
            logger.warning("keypoint cache %s was extracted with %s, now asked for %s; keeping the cached values",
                           self.folder, meta.get("extractor"), self.settings)

    def missing(self, keys: Sequence[str]) -> list[str]:
        table = self.table()
        return list(dict.fromkeys(k for k in keys if k not in table))

    def get(self, keys: Sequence[str]) -> np.ndarray:
        table = self.table()
        return np.stack([table[k] for k in keys]) if keys else np.zeros((0, KEYPOINT_DIM), np.float32)

    # ----------------------------------------------------------------- writing
    def add(self, keys: Sequence[str], vectors: np.ndarray) -> Path:
        """Write one part atomically; the rows become visible to `get` at once."""
        self._write_meta()
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        path = self._atomic_npz(name, keys, np.asarray(vectors, dtype=np.float32))
        self.table().update(zip(keys, np.asarray(vectors, dtype=np.float32)))
        return path

    def compact(self) -> None:
        """Merge all parts into one (old parts are deleted after the merged one is in place)."""
        parts = self.parts()
        if len(parts) < 2:
            return
        table = self.table()
        keys = list(table)
        merged = self._atomic_npz(f"part-{time.time_ns():020d}-merged.npz", keys,
                                  np.stack([table[k] for k in keys]))
        for part in parts:
            if part != merged:
                part.unlink(missing_ok=True)

    def _write_meta(self) -> None:
        meta_path = self.folder / "meta.json"
        if meta_path.is_file():
            return
        from clipmg.utils import atomic_write_text

        atomic_write_text(meta_path, json.dumps({"layout": LAYOUT_VERSION, "keypoint_dim": KEYPOINT_DIM,
                                                 "extractor": self.settings}, indent=2))

    def _atomic_npz(self, name: str, keys: Sequence[str], vectors: np.ndarray) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, paths=np.array(list(keys), dtype=str), keypoints=vectors)
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.folder / name


# ----------------------------------------------------------------------- extraction
def extract_into_cache(cache: KeypointCache, keys: Sequence[str], files: Sequence[Path],
                       make_extractor: Callable[[], KeypointExtractor] | None = None,
                       chunk: int = CHUNK_FRAMES, desc: str = "keypoints") -> int:
    """Extract the keys not yet in `cache` (image `files[i]` for `keys[i]`), writing a part
    after every `chunk` frames. Returns the number extracted. Unreadable images are skipped
    with a warning (their frames fail or are skipped where the image itself is loaded)."""
    file_of = dict(zip(keys, files))
    todo = cache.missing(keys)
    if not todo:
        return 0
    make_extractor = make_extractor or (lambda: KeypointExtractor(ExtractorSettings(**{
        k: v for k, v in cache.settings.items() if k in ExtractorSettings.__dataclass_fields__})))
    from clipmg.data import load_image

    done, bad = 0, []
    bar = progress(total=len(todo), desc=desc, unit="frame")
    with make_extractor() as extractor:
        for start in range(0, len(todo), chunk):
            batch_keys, vectors = [], []
            for key in todo[start:start + chunk]:
                try:
                    image = load_image(file_of[key])
                except ImageError as error:
                    bad.append(str(error))
                    continue
                batch_keys.append(key)
                vectors.append(extractor.extract(image))
            if batch_keys:
                cache.add(batch_keys, np.stack(vectors))
            done += len(batch_keys)
            bar.update(len(todo[start:start + chunk]))
    bar.close()
    if bad:
        logger.warning("keypoints: %d image(s) could not be read and have no keypoints, e.g. %s", len(bad), bad[0])
    cache.compact()
    return done


def resolve_frame(path: str, roots: Sequence[Path]) -> tuple[Path, str, Path] | None:
    """(cache root, key, image file) of one metadata `Path`, or None if the image is missing."""
    key = normalise_key(path)
    candidate = Path(key)
    if candidate.is_absolute():
        return (candidate.parent, candidate.name, candidate) if candidate.is_file() else None
    for root in roots:
        if (Path(root) / candidate).is_file():
            return Path(root), key, Path(root) / candidate
    return None


def keypoints_for_paths(paths: Sequence[str], roots: Sequence[Path], options: Mapping | None = None,
                        make_extractor: Callable[[], KeypointExtractor] | None = None) -> np.ndarray:
    """(len(paths), KEYPOINT_DIM) keypoints from the cache, extracting (and caching) those
    missing. Images not found under any root get the "nothing found" vector."""
    options = dict(options or {})
    override = options.get("keypoints")
    rows = np.stack([empty_keypoints()] * len(paths)) if paths else np.zeros((0, KEYPOINT_DIM), np.float32)
    groups: dict[Path, list[tuple[int, str, Path]]] = {}
    missing = 0
    for index, path in enumerate(paths):
        found = resolve_frame(path, roots)
        if found is None:
            missing += 1
            continue
        root, key, file = found
        if override:
            key = normalise_key(path)
        folder = Path(override) if override else default_cache_folder(root)
        groups.setdefault(folder, []).append((index, key, file))
    if missing:
        logger.warning("keypoints: %d of %d images were not found under %s; they count as 'no person'",
                       missing, len(paths), ", ".join(map(str, roots)) or "(no image root)")
    for folder, items in groups.items():
        cache = KeypointCache(folder)
        keys = [key for _, key, _ in items]
        extract_into_cache(cache, keys, [file for _, _, file in items], make_extractor=make_extractor)
        table = cache.table()
        for index, key, _ in items:
            if key in table:
                rows[index] = table[key]
    return rows
