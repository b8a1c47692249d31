"""The data section: the frames, their columns (a `clipmg.data.Columns`), the split, decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clipmg.data import Columns
from clipmg.errors import DataError
from clipmg.training.settings.base import Settings, Unused, setting, settings_of

#: share of the frames an automatic split sets apart as its test part (clipmg train, split, compare)
DEFAULT_TEST_FRACTION = 0.1
#: the flags of the metadata's columns: (flag, `Columns` attribute, help)
COLUMN_FLAGS = (
    ("path_column", "path", "metadata column of the image paths"),
    ("class_column", "class_", "metadata column of the class ids"),
    ("video_column", "video", "metadata column naming each frame's clip"),
    ("frame_column", "frame", "metadata column ordering the frames of a clip"),
    ("caption_column", "caption", "metadata column of the frame captions"),
)


@dataclass
class DataSettings(Settings):
    section: ClassVar[str] = "data"

    metadata: str | None = setting(None, "train.xlsx or a .csv of frames (Path, Class, Video ID, Frame ID, Caption)")
    labels: str | None = setting(None, "Clip_label.csv: class id, class name")
    image_root: str | None = setting(None, "folder the Path column is relative to (default: training/ beside "
                                           "--metadata)")
    columns: Columns = settings_of(Columns, COLUMN_FLAGS)
    split: str | None = setting(None, "split CSV from `clipmg split` (default: split --metadata here)")
    split_by: str = setting("clip", "how a run without --split splits: by clip, subject, or frames (leaks)")
    val_fraction: float = setting(0.2, "share of the frames in validation (it chooses best/), without --split")
    test_fraction: float = setting(DEFAULT_TEST_FRACTION, "share of the frames (whole clips, or subjects with "
                                   "--split-by subject) set apart as a test part, without --split: it neither "
                                   "trains nor chooses best/, and the run's final figures come from it; 0 keeps none")
    subject_column: str | None = setting(None, "metadata column naming the subject, for --split-by subject")
    skip_bad_images: bool = setting(False, "count unreadable images and go on instead of failing")
    cache_frames: bool = setting(True, "decode each frame once per run, at the size training needs, into a "
                                       "memory-mapped cache in the temporary folder (false: every epoch)")
    workers: int | None = setting(None, "image decoding processes (default: chosen for the machine, "
                                        "clipmg.utils.default_workers)")

    def check(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise DataError(f"config: val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise DataError(f"config: test_fraction must be in [0, 1) and leave frames for training beside "
                            f"val_fraction, got {self.test_fraction}")
        if self.workers is not None and self.workers < 0:
            raise DataError(f"config: workers must be 0 or more, got {self.workers}")

    def unused_settings(self):
        rules: list[Unused] = []
        if self.split:
            rules.append((("split_by", "val_fraction", "test_fraction", "subject_column"), "drop --split",
                          f"the split comes from {self.split}"))
        elif self.split_by != "subject":
            rules.append((("subject_column",), "use --split-by subject", "only a split by subject reads it"))
        return iter(rules)
