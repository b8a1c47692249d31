"""What a model learned, as pictures: embeddings of frames and classes, the TensorBoard projector,
2-D maps, and the HTML report of a checkpoint's results."""

from clipmg.visual.embeddings import (
    DEFAULT_THUMB_SIZE,
    Embeddings,
    class_embedding_points,
    embed_frames,
    prompt_descriptions,
    stored_prompt_set,
)
from clipmg.visual.maps import MAP_METHODS, class_color, plot_embedding_map, project_2d
from clipmg.visual.projector import DEFAULT_TAG, METADATA_HEADER, projector_table, write_projector
from clipmg.visual.report import DEFAULT_GALLERY_PER_CLASS, report_html, write_html_report

__all__ = [
    "DEFAULT_GALLERY_PER_CLASS",
    "DEFAULT_TAG",
    "DEFAULT_THUMB_SIZE",
    "MAP_METHODS",
    "METADATA_HEADER",
    "Embeddings",
    "class_color",
    "class_embedding_points",
    "embed_frames",
    "plot_embedding_map",
    "project_2d",
    "projector_table",
    "prompt_descriptions",
    "report_html",
    "stored_prompt_set",
    "write_html_report",
    "write_projector",
]
