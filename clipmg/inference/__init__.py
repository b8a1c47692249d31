"""Inference: one image-batch pipeline, the `Classifier`, frame features, streamed predictions
(`predict_csv`, test.py) and checkpoint evaluation."""

from clipmg.inference.adapt import adapt_batch_norm, adapt_classifier
from clipmg.inference.batches import (
    DEFAULT_BATCH_SIZE,
    ImageListDataset,
    default_workers,
    image_roots,
    iter_image_batches,
    resolve_image_path,
    thumbnail,
)
from clipmg.inference.classifier import DEFAULT_CHECKPOINT, Classifier, class_names_for
from clipmg.inference.ensemble import Ensemble, load_classifier
from clipmg.inference.evaluation import default_eval_dir, evaluate_checkpoint
from clipmg.inference.features import EncodedFrames, encode_frames
from clipmg.inference.predict_csv import DEFAULT_TOPK, predict_csv
from clipmg.inference.scoring import Scored, prediction_frame, score_images
from clipmg.inference.tta import TTA_MODES, tta_logits

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_TOPK",
    "Classifier",
    "Ensemble",
    "EncodedFrames",
    "TTA_MODES",
    "ImageListDataset",
    "Scored",
    "adapt_batch_norm",
    "adapt_classifier",
    "class_names_for",
    "default_eval_dir",
    "default_workers",
    "encode_frames",
    "evaluate_checkpoint",
    "image_roots",
    "iter_image_batches",
    "load_classifier",
    "predict_csv",
    "prediction_frame",
    "resolve_image_path",
    "score_images",
    "thumbnail",
    "tta_logits",
]
