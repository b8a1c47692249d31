"""Inference: one image-batch pipeline, the `Classifier`, frame features, streamed predictions
(`predict_csv`, test.py) and checkpoint evaluation."""

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
from clipmg.inference.evaluation import default_eval_dir, evaluate_checkpoint
from clipmg.inference.features import EncodedFrames, encode_frames
from clipmg.inference.predict_csv import DEFAULT_TOPK, predict_csv
from clipmg.inference.scoring import Scored, prediction_frame, score_images

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_TOPK",
    "Classifier",
    "EncodedFrames",
    "ImageListDataset",
    "Scored",
    "class_names_for",
    "default_eval_dir",
    "default_workers",
    "encode_frames",
    "evaluate_checkpoint",
    "image_roots",
    "iter_image_batches",
    "predict_csv",
    "prediction_frame",
    "resolve_image_path",
    "score_images",
    "thumbnail",
]
