"""Data layer: metadata, labels, images, transforms, datasets, samplers, splits, checks."""

from clipmg.data.check import CheckReport, check_dataset
from clipmg.data.clips import ClipDataset, clip_positions, clip_table
from clipmg.data.dataset import FrameDataset, collate_frames
from clipmg.data.extras import EXTRA_FIELD_LOADERS, load_extra_fields, register_extra_field
from clipmg.data.images import load_image, verify_image
from clipmg.data.labels import caption_lookup, class_index_map, clean_class_name, load_labels
from clipmg.data.metadata import (
    STANDARD_COLUMNS,
    Columns,
    default_image_root,
    find_column,
    parse_metadata,
    read_metadata,
)
from clipmg.data.samplers import balanced_sample_weights, class_counts, sample_frames
from clipmg.data.splits import Split, read_split, select_frames, split_dataset, subset, write_split
from clipmg.data.transforms import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageTransform,
    create_transform,
    normalize_images,
    transform_for_model,
)

__all__ = [
    "EXTRA_FIELD_LOADERS",
    "load_extra_fields",
    "register_extra_field",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "STANDARD_COLUMNS",
    "CheckReport",
    "ClipDataset",
    "Columns",
    "FrameDataset",
    "ImageTransform",
    "Split",
    "balanced_sample_weights",
    "find_column",
    "caption_lookup",
    "check_dataset",
    "clip_positions",
    "clip_table",
    "class_counts",
    "class_index_map",
    "clean_class_name",
    "collate_frames",
    "create_transform",
    "normalize_images",
    "default_image_root",
    "load_image",
    "load_labels",
    "parse_metadata",
    "read_metadata",
    "read_split",
    "sample_frames",
    "select_frames",
    "split_dataset",
    "subset",
    "transform_for_model",
    "verify_image",
    "write_split",
]
