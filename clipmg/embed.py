"""What the model learned, as pictures: a TensorBoard projector run, a 2-D map, a confusion image.

`clipmg embed` samples frames (stratified by class, at most `per_class` of each, deterministic
with a seed), encodes them with a checkpoint's image tower, and writes a TensorBoard projector
run: the normalised image embeddings with one metadata row per frame (true and predicted class,
whether it is correct, clip, frame, path) and a sprite of thumbnails, plus the class prompt
embeddings -- the text side of the classifier, one point per class -- appended as rows marked
``kind=prompt``, in the same space. A static 2-D map (PCA by default, t-SNE with scikit-learn)
is saved as a PNG for reports. The trainer calls `log_validation_projector` every
``embed_every`` epochs and `log_confusion` every epoch.

Images are decoded in DataLoader workers with the dataset of `clipmg.predict`, and scored with
the `Classifier` (model + class embeddings built once), so the predicted classes here are
those of `clipmg predict` and `clipmg evaluate`, whatever the backend or the prompts.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from clipmg import data as cdata
from clipmg.errors import DataError, ImageError
from clipmg.predict import (
    DEFAULT_BATCH_SIZE,
    MISSING,
    OK,
    UNREADABLE,
    Classifier,
    ImageListDataset,
    collate_images,
    default_workers,
    image_problem,
    resolve_image_path,
    training_image_roots,
)
from clipmg.prompts import PromptSet, load_prompt_set
from clipmg.utils import logger, progress, threads_beside_workers

DEFAULT_MAX_IMAGES = 2000
DEFAULT_THUMB_SIZE = 64
DEFAULT_TAG = "clipmg"
SPRITE_MAX_SIDE = 8192  # the projector loads the sprite as one WebGL texture
METADATA_HEADER = ("label", "kind", "true_class", "pred_class", "correct", "score", "clip_id", "frame_id", "path")
IMAGE, PROMPT = "image", "prompt"
MAP_METHODS = ("pca", "tsne")


# ----------------------------------------------------------------------------- sampling
def sample_frames(frames: pd.DataFrame, max_images: int | None = DEFAULT_MAX_IMAGES, per_class: int | None = None,
                  seed: int = 0, class_column: str = "class_id") -> pd.DataFrame:
    """At most `max_images` frames, stratified by class: every class keeps min(its frames, cap)
    frames, the cap being `per_class` or else the largest one that fits `max_images` (the slots
    left below the next cap go to randomly chosen larger classes), so rare classes keep all
    their frames. Frames are drawn at random with `seed`; the result keeps the input order
    (and index). None or 0 means no limit."""
    if frames.empty:
        return frames
    rng = np.random.default_rng(seed)
    classes = frames[class_column].to_numpy()
    ids, counts = np.unique(classes, return_counts=True)
    take = counts.copy()
    if per_class:
        take = np.minimum(take, per_class)
    if max_images and take.sum() > max_images:
        cap = _largest_cap(take, max_images)
        quota = np.minimum(take, cap)
        spare = max_images - int(quota.sum())
        larger = np.flatnonzero(take > cap)
        quota[rng.choice(larger, size=spare, replace=False)] += 1  # spare < len(larger) by the cap's choice
        take = quota
    chosen = []
    for class_id, n in zip(ids, take):
        positions = np.flatnonzero(classes == class_id)
        chosen.append(positions if n == len(positions) else rng.choice(positions, size=int(n), replace=False))
    return frames.iloc[np.sort(np.concatenate(chosen))]


def _largest_cap(counts: np.ndarray, budget: int) -> int:
    """The largest c with sum(min(counts, c)) <= budget."""
    low, high = 0, int(counts.max())
    while low < high:
        middle = (low + high + 1) // 2
        if np.minimum(counts, middle).sum() <= budget:
            low = middle
        else:
            high = middle - 1
    return low


# ------------------------------------------------------------------------- extraction
@dataclass
class Embeddings:
    """Image embeddings of some frames, with what the classifier made of them, and the class
    prompt embeddings of the same space."""

    features: np.ndarray  # (n, D) float32, normalised image embeddings
    logits: np.ndarray  # (n, C) float32, scale * features @ class_embeddings.T
    targets: np.ndarray  # (n,) class index, -1 where unknown
    frames: pd.DataFrame  # the n frames embedded (path, class_id, video_id, frame_id, ...), index 0..n-1
    class_ids: list[int]
    class_names: list[str]
    class_embeddings: np.ndarray  # (C, D) float32, normalised
    prompt_texts: list[str] = field(default_factory=list)  # one description per class (may be empty)
    thumbnails: np.ndarray | None = None  # (n, S, S, 3) uint8
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (position in input, status, message)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1) if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.targets

    @property
    def scores(self) -> np.ndarray:
        """Softmax probability of the predicted class."""
        if not len(self):
            return np.zeros(0, dtype=np.float32)
        return torch.softmax(torch.from_numpy(self.logits), dim=1).max(dim=1).values.numpy()


def thumbnail(pixels: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3) uint8 image as a `size` x `size` thumbnail: centre square, resized."""
    from PIL import Image

    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(pixels[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), Image.BILINEAR), dtype=np.uint8)


class ThumbnailImageDataset(ImageListDataset):
    """`clipmg.predict.ImageListDataset` whose items also carry a thumbnail (for the sprite),
    made from the same decoded pixels."""

    def __init__(self, paths: Sequence[str], roots: Sequence[Path], transform, thumb_size: int | None,
                 extra_fields=None):
        super().__init__(paths, roots, transform, extra_fields=extra_fields)
        self.thumb_size = thumb_size
        if thumb_size and self.decode_size:
            self.decode_size = max(self.decode_size, thumb_size)

    def __getitem__(self, index: int) -> dict:
        path = resolve_image_path(str(self.paths[index]), self.roots)
        if path is None:
            return {"index": index, "status": MISSING, "image": None, "error": "", "thumb": None}
        try:
            pixels = cdata.load_image(path, max_size=self.decode_size)
            image = self.transform(pixels)
        except ImageError as error:
            return {"index": index, "status": UNREADABLE, "image": None, "error": str(error), "thumb": None}
        thumb = thumbnail(pixels, self.thumb_size) if self.thumb_size else None
        return {"index": index, "status": OK, "image": image, "error": "", "thumb": thumb,
                "extras": self.extras_at(index)}


def collate_with_thumbnails(items: list[dict]) -> dict:
    batch = collate_images(items)
    thumbs = [item["thumb"] for item in items if item["image"] is not None and item["thumb"] is not None]
    batch["thumbs"] = np.stack(thumbs) if thumbs else None
    return batch


def prompt_descriptions(prompt_set: PromptSet | None, class_ids: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """One line per class saying which prompts its embedding averages (for a learned set: how
    many learned context vectors precede the class text)."""
    prompt_set = prompt_set or PromptSet()
    learned = int(getattr(prompt_set, "n_ctx", 0) or 0)
    lines = []
    for cid, name in zip(class_ids, class_names):
        texts = prompt_set.texts_for(name, cid)
        line = texts[0] + (f" (+{len(texts) - 1} more templates)" if len(texts) > 1 else "")
        lines.append(f"[{learned} learned context vectors] {line}" if learned else line)
    return lines


def stored_prompt_set(config: dict) -> PromptSet:
    """The prompt set of a checkpoint's config, for describing its prompt points only (the points
    themselves are the Classifier's class embeddings): templates and descriptions, and for a
    learned set (``"type": "learned"``) its number of context vectors, without loading them."""
    data = dict(config.get("prompts") or {})
    prompt_set = PromptSet.from_dict({k: v for k, v in data.items() if k in ("name", "templates", "descriptions")})
    prompt_set.n_ctx = int(data.get("n_ctx") or 0) if data.get("type") == "learned" else 0
    return prompt_set


@torch.inference_mode()
def embed_frames(classifier: Classifier, frames: pd.DataFrame, roots: Sequence[Path], *, source: str = "metadata",
                 column: str = "Path", thumb_size: int | None = DEFAULT_THUMB_SIZE,
                 batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, skip_missing: bool = False,
                 prompt_texts: Sequence[str] | None = None, desc: str = "embed") -> Embeddings:
    """Encode the images of `frames` (standard columns: path, class_id, ...; found under `roots`).

    A missing or unreadable image raises ImageError naming it, unless `skip_missing` (then it
    is left out and listed in `skipped`). Logits are computed as `Classifier.logits` does.
    """
    frames = frames.reset_index(drop=True)
    n = len(frames)
    paths = frames["path"].astype(str).to_numpy()
    rows = frames["row"].to_numpy() if "row" in frames else np.arange(2, n + 2)
    workers = default_workers(classifier.device) if workers is None else workers
    workers = max(0, min(workers, -(-n // batch_size)))
    dataset = ThumbnailImageDataset(paths, roots, classifier.transform(), thumb_size,
                                    extra_fields=classifier.extra_fields(paths, roots))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_with_thumbnails, pin_memory=classifier.device.type == "cuda",
                        generator=torch.Generator())  # leaves the global RNG (training's) alone
    features, positions, thumbs, skipped, head_logits = [], [], [], [], []
    with threads_beside_workers(classifier.device, workers), progress(total=n, desc=desc, unit="img") as bar:
        for batch in loader:
            for index, state, error in batch["bad"]:
                message = image_problem(state, str(paths[index]), int(rows[index]), source, roots, error, column)
                if not skip_missing:
                    hint = "pass --image-root" if state == MISSING else "fix or remove the file"
                    raise ImageError(f"{message}; {hint}, or --skip-missing to embed the other frames")
                skipped.append((index, state, message))
            if batch["images"] is not None:
                images = classifier.prepare_images(batch["images"])
                with classifier.autocast():
                    extras = {k: v.to(classifier.device) for k, v in batch["extras"].items()}
                    encoded = classifier.model.encode_image(images, normalize=True, **extras)
                    if classifier.class_embeddings is None:  # a model with its own class head
                        head_logits.append(classifier.model.class_logits(images, None, **extras).float())
                features.append(encoded.float())
                positions.append(batch["indices"])
                if batch["thumbs"] is not None:
                    thumbs.append(batch["thumbs"])
            bar.update(batch["size"])
    if skipped:
        logger.warning("%d of %d images could not be read and are left out, e.g. %s", len(skipped), n, skipped[0][2])
    class_points = class_embedding_points(classifier)
    feats = torch.cat(features) if features else torch.zeros(0, class_points.shape[1], device=classifier.device)
    if classifier.class_embeddings is None:
        logits = (torch.cat(head_logits) if head_logits else torch.zeros(0, classifier.num_classes)).cpu().numpy()
    else:
        logits = (classifier.scale * feats @ classifier.class_embeddings.T).cpu().numpy().astype(np.float32)
    kept = torch.cat(positions).numpy() if positions else np.zeros(0, dtype=np.int64)
    index_of = {cid: i for i, cid in enumerate(classifier.class_ids)}
    targets = np.array([index_of.get(int(c), -1) for c in frames["class_id"].to_numpy()[kept]], dtype=np.int64)
    return Embeddings(features=feats.cpu().numpy().astype(np.float32), logits=logits, targets=targets,
                      frames=frames.iloc[kept].reset_index(drop=True), class_ids=list(classifier.class_ids),
                      class_names=list(classifier.class_names),
                      class_embeddings=class_points.float().cpu().numpy(),
                      prompt_texts=list(prompt_texts or []),
                      thumbnails=np.concatenate(thumbs) if thumbs else None, skipped=skipped)


def class_embedding_points(classifier: Classifier) -> torch.Tensor:
    """(C, D) class points shown beside the frames: the prompt embeddings, or for a model with a
    linear class head (whose features are what `encode_image` gives) its normalised weight rows."""
    if classifier.class_embeddings is not None:
        return classifier.class_embeddings
    return torch.nn.functional.normalize(classifier.model.classifier.weight.detach().float(), dim=-1)


# ------------------------------------------------------------------------- projector
def _cell(value) -> str:
    """A metadata cell: no tabs or line breaks (they would shift the TSV), never empty-looking NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


def projector_table(emb: Embeddings, with_prompts: bool = True) -> tuple[np.ndarray, list[list[str]]]:
    """The projector's points: the image embeddings, then (with `with_prompts`) one prompt
    embedding per class; and one metadata row per point (columns `METADATA_HEADER`)."""
    names = emb.class_names
    rows: list[list[str]] = []
    preds, correct, scores = emb.preds, emb.correct, emb.scores
    for i, frame in enumerate(emb.frames.itertuples(index=False)):
        true = names[emb.targets[i]] if emb.targets[i] >= 0 else ""
        clip, frame_id = getattr(frame, "video_id", ""), getattr(frame, "frame_id", "")
        rows.append([f"{true} | {clip}#{frame_id}", IMAGE, true, names[preds[i]],
                     "yes" if correct[i] else "no", f"{scores[i]:.3f}", clip, frame_id, frame.path])
    matrix = emb.features
    if with_prompts:
        texts = emb.prompt_texts or [""] * len(names)
        for name, text in zip(names, texts):
            rows.append([f"PROMPT {name}", PROMPT, name, name, "", "", "", "", text])
        matrix = np.concatenate([matrix, emb.class_embeddings.astype(np.float32)])
    return matrix, [[_cell(v) for v in row] for row in rows]


def sprite_images(emb: Embeddings, with_prompts: bool = True, thumb_size: int | None = None) -> torch.Tensor | None:
    """(N, 3, S, S) float images in [0, 1] for `add_embedding`'s `label_img`: the thumbnails,
    then a labelled tile per prompt; S shrinks so that the sprite stays within 8192 px."""
    if emb.thumbnails is None or len(emb.thumbnails) != len(emb):
        return None
    tiles = emb.thumbnails
    size = tiles.shape[1] if thumb_size is None else thumb_size
    total = len(tiles) + (len(emb.class_names) if with_prompts else 0)
    size = max(8, min(size, SPRITE_MAX_SIDE // math.ceil(math.sqrt(max(total, 1)))))
    if size != tiles.shape[1]:
        tiles = np.stack([thumbnail(t, size) for t in tiles]) if len(tiles) else np.zeros((0, size, size, 3), np.uint8)
    if with_prompts:
        prompts = [prompt_tile(cid, name, size, class_color(i)) for i, (cid, name)
                   in enumerate(zip(emb.class_ids, emb.class_names))]
        tiles = np.concatenate([tiles, np.stack(prompts)]) if prompts else tiles
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct colour per class index: tab10's, their light versions, then tab20b and tab20c
    (60 colours)."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    palette = tab20[0::2] + tab20[1::2] + colormaps["tab20b"].colors + colormaps["tab20c"].colors
    r, g, b = palette[index % len(palette)][:3]
    return int(r * 255), int(g * 255), int(b * 255)


def prompt_tile(class_id: int, name: str, size: int, color: tuple[int, int, int]) -> np.ndarray:
    """The sprite of a prompt point: the class id and name on a tile of the class's colour."""
    from PIL import Image, ImageDraw, ImageFont

    tile = Image.new("RGB", (size, size), color)
    draw = ImageDraw.Draw(tile)
    border = max(1, size // 16)
    draw.rectangle([0, 0, size - 1, size - 1], outline=(0, 0, 0), width=border)
    font = ImageFont.load_default()
    words, lines = f"#{class_id} {name}".split(), [""]
    for word in words:  # wrap to the tile's width
        trial = f"{lines[-1]} {word}".strip()
        if draw.textlength(trial, font=font) <= size - 2 * border - 2 or not lines[-1]:
            lines[-1] = trial
        else:
            lines.append(word)
    y = border + 1
    for line in lines:
        draw.text((border + 1, y), line, fill=(0, 0, 0), font=font)
        y += 11
    return np.asarray(tile, dtype=np.uint8)


def _merge_existing_projector_config(writer) -> None:
    """SummaryWriter rewrites projector_config.pbtxt from what *it* logged; start it from the
    file already there, so a second `clipmg embed` (or a resumed run) adds to the run."""
    if hasattr(writer, "_projector_config"):
        return
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config_file = Path(writer.get_logdir()) / "projector_config.pbtxt"
    config = ProjectorConfig()
    if config_file.is_file():
        try:
            text_format.Parse(config_file.read_text(encoding="utf-8"), config)
        except text_format.ParseError as error:
            logger.warning("%s could not be parsed (%s); it is replaced", config_file, error)
            config = ProjectorConfig()
    writer._projector_config = config


def write_projector(writer, emb: Embeddings, tag: str = DEFAULT_TAG, global_step: int = 0,
                    with_prompts: bool = True, with_sprite: bool = True) -> dict:
    """Add `emb` to `writer`'s projector run (`SummaryWriter.add_embedding`): tensor, metadata
    with a header row, sprite. Logging the same tag and step again replaces it. Returns the
    files written and the number of points."""
    if not len(emb):
        raise DataError("no image could be embedded, so there is nothing to show in the projector")
    matrix, rows = projector_table(emb, with_prompts)
    label_img = sprite_images(emb, with_prompts) if with_sprite else None
    _merge_existing_projector_config(writer)
    tensor_name = f"{tag}:{str(global_step).zfill(5)}"
    kept = [e for e in writer._projector_config.embeddings if e.tensor_name != tensor_name]
    del writer._projector_config.embeddings[:]
    writer._projector_config.embeddings.extend(kept)
    folder = Path(writer.get_logdir()) / str(global_step).zfill(5) / writer._encode(tag)
    for name in ("tensors.tsv", "metadata.tsv", "sprite.png"):  # a rerun replaces them (no "exists" print)
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    writer.add_embedding(matrix, metadata=rows, label_img=label_img, global_step=global_step, tag=tag,
                         metadata_header=list(METADATA_HEADER))
    writer.flush()
    files = {"config": Path(writer.get_logdir()) / "projector_config.pbtxt", "tensors": folder / "tensors.tsv",
             "metadata": folder / "metadata.tsv"}
    if label_img is not None:
        files["sprite"] = folder / "sprite.png"
    return {"files": files, "n_points": int(len(matrix)), "n_images": len(emb),
            "n_prompts": int(len(matrix) - len(emb)), "tensor_name": tensor_name,
            "sprite_tile": int(label_img.shape[-1]) if label_img is not None else None}


# ------------------------------------------------------------------------- 2-D map
def project_2d(emb: Embeddings, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """2-D coordinates of the images and of the prompts, and axis captions.

    PCA is fitted on the image embeddings and the prompts are projected onto it (fitted on
    both, the first axis would mostly separate text from images: the "modality gap"). t-SNE
    places images and prompts together (cosine distance); it needs scikit-learn.
    """
    images, prompts = emb.features.astype(np.float64), emb.class_embeddings.astype(np.float64)
    if method == "pca":
        mean = images.mean(axis=0)
        _, singular, components = np.linalg.svd(images - mean, full_matrices=False)
        axes = components[:2]
        if axes.shape[0] < 2:  # a single image: any second axis
            axes = np.vstack([axes, np.zeros((2 - axes.shape[0], images.shape[1]))])
        variance = singular ** 2
        share = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
        share = np.pad(share, (0, 2 - len(share)))
        caption = f"PCA of the image embeddings (PC1 {share[0]:.0%}, PC2 {share[1]:.0%} of the variance)"
        return (images - mean) @ axes.T, (prompts - mean) @ axes.T, caption
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise DataError("--map tsne needs scikit-learn (pip install scikit-learn); --map pca does not") from None
        points = np.vstack([images, prompts])
        perplexity = float(max(2.0, min(30.0, (len(points) - 1) / 3)))
        coords = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed
                      ).fit_transform(points)
        return coords[:len(images)], coords[len(images):], f"t-SNE (cosine, perplexity {perplexity:.1f}) of images and prompts"
    raise DataError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")


def plot_embedding_map(emb: Embeddings, path: str | os.PathLike, method: str = "pca", seed: int = 0,
                       title: str = "") -> Path:
    """A PNG of the embeddings in 2-D: images coloured by true class (hollow when misclassified),
    each class's prompt a large star of the same colour, labelled. Drawn on a bare Figure (Agg)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not len(emb):
        raise DataError("no image could be embedded, so there is nothing to draw")
    image_xy, prompt_xy, caption = project_2d(emb, method, seed)
    names = emb.class_names
    fig = Figure(figsize=(11, 8))
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for k, name in enumerate(names):
        color = np.array(class_color(k)) / 255.0
        mine = emb.targets == k
        if mine.any():
            right, wrong = mine & emb.correct, mine & ~emb.correct
            ax.scatter(image_xy[right, 0], image_xy[right, 1], s=18, color=color, alpha=0.8, linewidths=0)
            ax.scatter(image_xy[wrong, 0], image_xy[wrong, 1], s=18, facecolors="none", edgecolors=color,
                       alpha=0.9, linewidths=1.0)
        ax.scatter(prompt_xy[k, 0], prompt_xy[k, 1], s=260, marker="*", color=color, edgecolors="black",
                   linewidths=0.8, zorder=3)
        ax.annotate(name[:24], prompt_xy[k], xytext=(6, 4), textcoords="offset points", fontsize=7, zorder=4)
        recall = f"{emb.correct[mine].mean():.0%}" if mine.any() else "-"
        handles.append(Line2D([], [], marker="o", linestyle="", color=color,
                              label=f"{emb.class_ids[k]}: {name[:28]} ({int(mine.sum())}, {recall})"))
    handles += [Line2D([], [], marker="o", linestyle="", color="black", label="frame, correctly classified"),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="black",
                       label="frame, misclassified"),
                Line2D([], [], marker="*", linestyle="", color="white", markeredgecolor="black", markersize=12,
                       label="class prompt embedding")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
              title="true class (frames, recall)", title_fontsize=8)
    ax.set_xlabel(caption, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    accuracy = float(emb.correct[emb.targets >= 0].mean()) if (emb.targets >= 0).any() else float("nan")
    ax.set_title(title or f"{len(emb)} frames, {len(names)} classes, top-1 {accuracy:.3f} on these frames", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


# ------------------------------------------------------------------------- training
def log_confusion(writer, logits: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str], step: int,
                  tag: str = "val/confusion", class_ids: Sequence[int] | None = None) -> None:
    """The row-normalised confusion matrix (as `clipmg evaluate` draws it) as a TensorBoard image."""
    from PIL import Image

    from clipmg.evaluate import confusion, plot_confusion

    logits, targets = torch.as_tensor(logits).float(), torch.as_tensor(targets).long()
    cm = confusion(logits, targets, len(class_names))
    ticks = [f"{cid}: {name}" for cid, name in zip(class_ids or range(len(class_names)), class_names)]
    correct = int(np.trace(cm))
    title = f"step {step}: {len(targets)} frames, top1 {correct / max(1, len(targets)):.3f}"
    with tempfile.TemporaryDirectory(prefix="clipmg-confusion-") as folder:
        png = plot_confusion(cm, ticks, Path(folder) / "confusion.png", title=title)
        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))
    writer.add_image(tag, pixels, step, dataformats="HWC")


def log_validation_projector(writer, model, class_ids: Sequence[int], class_names: Sequence[str],
                             prompt_set: PromptSet | None, frames: pd.DataFrame, image_root: str | os.PathLike,
                             step: int, max_images: int = 500, seed: int = 0, workers: int = 0,
                             batch_size: int = DEFAULT_BATCH_SIZE, tag: str = "val",
                             preprocess: dict | None = None) -> dict:
    """Projector points for a fixed sample of validation frames (the same every call: it depends
    only on `frames` and `seed`), at `step`. Unreadable images are left out."""
    was_training = model.training
    classifier = Classifier.from_model(model, class_ids, class_names, prompt_set, preprocess=preprocess)
    try:
        sample = sample_frames(frames, max_images=max_images, seed=seed)
        emb = embed_frames(classifier, sample, [Path(image_root)], source="validation frames",
                           batch_size=batch_size, workers=workers, skip_missing=True,
                           prompt_texts=prompt_descriptions(prompt_set, class_ids, class_names), desc="projector")
        return write_projector(writer, emb, tag=tag, global_step=step)
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------- the command
def embed_checkpoint(checkpoint: str | os.PathLike, metadata: str | os.PathLike, logdir: str | os.PathLike,
                     labels=None, split: str | os.PathLike | None = None, subset: str = "val",
                     max_images: int | None = DEFAULT_MAX_IMAGES, per_class: int | None = None, seed: int = 0,
                     image_root: str | os.PathLike | None = None, columns: cdata.Columns | None = None,
                     prompts=None, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                     workers: int | None = None, skip_missing: bool = False, tag: str = DEFAULT_TAG,
                     global_step: int | None = None, thumb_size: int = DEFAULT_THUMB_SIZE,
                     map_method: str | None = "pca", map_path: str | os.PathLike | None = None,
                     classifier: Classifier | None = None) -> dict:
    """Write a TensorBoard projector run for (a stratified sample of) the frames of `metadata`
    (or `split`'s `subset`) into `logdir`, and a 2-D map PNG (`map_method` "pca", "tsne" or None;
    default file `<logdir>/embedding_map_<method>.png`). `global_step` defaults to the
    checkpoint's epoch. Returns a summary (files, counts, top1 on the sample, seconds)."""
    from torch.utils.tensorboard import SummaryWriter

    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if map_method not in (None, *MAP_METHODS):
        raise DataError(f"unknown map method {map_method!r}; choose one of {', '.join(MAP_METHODS)} (or none)")
    for name, value in (("--max-images", max_images), ("--per-class", per_class)):
        if value is not None and value < 0:
            raise DataError(f"{name} must be 0 (no limit) or more, got {value}")
    start = time.perf_counter()
    columns = columns or cdata.Columns()
    classifier = classifier or Classifier.from_checkpoint(checkpoint, device=device, labels=labels, prompts=prompts)
    config = classifier.config
    prompt_set = load_prompt_set(prompts) if prompts else stored_prompt_set(config)
    frames, source = cdata.select_frames(metadata, dict(zip(classifier.class_ids, classifier.class_names)), split, subset,
                                 columns)
    sample = sample_frames(frames, max_images=max_images, per_class=per_class, seed=seed)
    roots = [Path(image_root)] if image_root is not None else list(dict.fromkeys(
        [Path(cdata.default_image_root(metadata)), *training_image_roots(config)]))
    emb = embed_frames(classifier, sample, roots, source=str(source), column=columns.path, thumb_size=thumb_size,
                       batch_size=batch_size, workers=workers, skip_missing=skip_missing,
                       prompt_texts=prompt_descriptions(prompt_set, classifier.class_ids, classifier.class_names))
    if not len(emb):
        raise ImageError(f"none of the {len(sample)} sampled images of {source} could be read "
                         f"(first: {emb.skipped[0][2] if emb.skipped else 'none'})")
    step = int(config.get("epoch", 0) or 0) if global_step is None else global_step
    logdir = Path(logdir)
    writer = SummaryWriter(str(logdir))
    try:
        written = write_projector(writer, emb, tag=tag, global_step=step)
    finally:
        writer.close()
    map_file = None
    if map_method:
        map_file = plot_embedding_map(
            emb, map_path or logdir / f"embedding_map_{map_method}.png", method=map_method, seed=seed,
            title=f"{classifier.checkpoint or checkpoint}: {len(emb)} frames of {source.name}"
                  + (f" ({subset})" if split is not None else "")
                  + f", top-1 {float(emb.correct.mean()):.3f} on these frames")
    per_class_counts = emb.frames["class_id"].value_counts().sort_index()
    return {"logdir": str(logdir), "tag": tag, "global_step": step, "tensor_name": written["tensor_name"],
            "files": {k: str(v) for k, v in written["files"].items()}, "map": str(map_file) if map_file else None,
            "n_frames": len(frames), "n_sampled": len(sample), "n_images": len(emb), "n_prompts": written["n_prompts"],
            "n_skipped": len(emb.skipped), "skipped": [m for _, _, m in emb.skipped[:20]],
            "per_class": {int(k): int(v) for k, v in per_class_counts.items()},
            "top1": float(emb.correct.mean()), "dim": int(emb.features.shape[1]),
            "sprite_tile": written["sprite_tile"], "checkpoint": str(classifier.checkpoint or checkpoint),
            "source": str(source), "seconds": time.perf_counter() - start}


# -------------------------------------------------------------------------------- CLI
def add_embed_arguments(parser) -> None:
    from clipmg.predict import DEFAULT_CHECKPOINT

    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint folder, or a run folder (its best/)")
    parser.add_argument("--metadata", required=True, help="train.xlsx or a CSV of frames with their classes")
    parser.add_argument("--split", help="split CSV (from `clipmg split` or a run's split.csv)")
    parser.add_argument("--subset", default="val", choices=("train", "val", "all"),
                        help="which frames of --split (default val)")
    parser.add_argument("--logdir", default="runs/embed", help="TensorBoard log folder to write (default runs/embed)")
    parser.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES,
                        help=f"at most this many frames, stratified by class (default {DEFAULT_MAX_IMAGES}; 0: all)")
    parser.add_argument("--per-class", type=int, default=None, help="at most this many frames of each class")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and of t-SNE (default 0)")
    parser.add_argument("--map", default="pca", choices=(*MAP_METHODS, "none"),
                        help="static 2-D map PNG: pca (default), tsne (needs scikit-learn) or none")
    parser.add_argument("--map-out", help="PNG file of the map (default <logdir>/embedding_map_<method>.png)")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"name of the embedding in the projector (default {DEFAULT_TAG})")
    parser.add_argument("--step", type=int, default=None, help="global step to log at (default: the checkpoint's epoch)")
    parser.add_argument("--thumb-size", type=int, default=DEFAULT_THUMB_SIZE,
                        help=f"sprite thumbnail side in pixels (default {DEFAULT_THUMB_SIZE}; 0: no sprite)")
    parser.add_argument("--image-root", help="folder the Path column is relative to (default training/ beside the metadata)")
    parser.add_argument("--labels", help="Clip_label.csv to rename the classes (ids must be the checkpoint's)")
    parser.add_argument("--prompts", help="prompt set (file or name) replacing the checkpoint's")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes (default as predict)")
    parser.add_argument("--skip-missing", action="store_true", help="leave out missing or unreadable images")
    for column, default in (("path", "Path"), ("class", "Class"), ("video", "Video ID"),
                            ("frame", "Frame ID"), ("caption", "Caption")):
        parser.add_argument(f"--{column}-column", default=default, help=f"column name (default {default!r})")


def embed_from_args(args) -> int:
    columns = cdata.Columns(path=args.path_column, class_=args.class_column, video=args.video_column,
                            frame=args.frame_column, caption=args.caption_column)
    summary = embed_checkpoint(args.checkpoint, args.metadata, args.logdir, labels=args.labels, split=args.split,
                               subset=args.subset, max_images=args.max_images, per_class=args.per_class,
                               seed=args.seed, image_root=args.image_root, columns=columns, prompts=args.prompts,
                               batch_size=args.batch_size, device=args.device, workers=args.workers,
                               skip_missing=args.skip_missing, tag=args.tag, global_step=args.step,
                               thumb_size=args.thumb_size, map_method=None if args.map == "none" else args.map,
                               map_path=args.map_out)
    per_class = summary["per_class"]
    print(f"embedded {summary['n_images']} of {summary['n_frames']} frames of {summary['source']} "
          f"({len(per_class)} classes, {min(per_class.values())}..{max(per_class.values())} frames each) "
          f"and {summary['n_prompts']} class prompts, {summary['dim']}-d, in {summary['seconds']:.1f} s; "
          f"top-1 on these frames {summary['top1']:.3f}")
    if summary["n_skipped"]:
        print(f"left out {summary['n_skipped']} unreadable or missing images, e.g. {summary['skipped'][0]}")
    print(f"projector run: {summary['logdir']} (embedding {summary['tensor_name']})")
    if summary["map"]:
        print(f"2-D map: {summary['map']}")
    print(f"view it: tensorboard --logdir {summary['logdir']}  then open http://localhost:6006/#projector")
    return 0
