"""A TensorBoard projector run of `Embeddings`: the normalised image embeddings with one metadata
row per frame (true and predicted class, whether it is correct, clip, frame, path) and a sprite
of thumbnails, plus one point per class (its prompt embedding, in the same space) marked
``kind=prompt``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from clipmg.errors import DataError
from clipmg.inference import thumbnail
from clipmg.utils import logger
from clipmg.visual.embeddings import Embeddings
from clipmg.visual.maps import class_color

DEFAULT_TAG = "clipmg"
SPRITE_MAX_SIDE = 8192  # the projector loads the sprite as one WebGL texture
METADATA_HEADER = ("label", "kind", "true_class", "pred_class", "correct", "score", "clip_id", "frame_id", "path")
IMAGE, PROMPT = "image", "prompt"


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
