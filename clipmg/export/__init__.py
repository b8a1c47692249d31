"""Taking checkpoints elsewhere: one ONNX graph from images to class logits, and open_clip's own
weights and config for `openclip:` models."""

from clipmg.export.onnx_export import (
    INPUTS,
    LogitsGraph,
    check_exportable,
    export_onnx,
    verify_onnx,
)
from clipmg.export.openclip_export import (
    export_open_clip,
    open_clip_model_config,
    open_clip_state_dict,
)

FORMATS = ("onnx", "open_clip")

__all__ = [
    "FORMATS",
    "INPUTS",
    "LogitsGraph",
    "check_exportable",
    "export_onnx",
    "export_open_clip",
    "open_clip_model_config",
    "open_clip_state_dict",
    "verify_onnx",
]
