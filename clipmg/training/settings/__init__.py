"""The sections of a run's settings, each owning its settings and checking them: data, model,
text, loss, optimisation, fine-tuning tools, run. `clipmg.training.config.TrainConfig` holds one
of each and the rules across them."""

from clipmg.training.settings.base import CHOICES, SECTIONS, Flag, Settings
from clipmg.training.settings.data import COLUMN_FLAGS, DEFAULT_TEST_FRACTION, DataSettings
from clipmg.training.settings.learning import (
    LossSettings,
    OptimSettings,
    TextSettings,
    TuningSettings,
)
from clipmg.training.settings.model import BACKEND_SETTINGS, ModelSettings
from clipmg.training.settings.run import RunSettings

__all__ = [
    "BACKEND_SETTINGS",
    "CHOICES",
    "COLUMN_FLAGS",
    "DEFAULT_TEST_FRACTION",
    "SECTIONS",
    "DataSettings",
    "Flag",
    "LossSettings",
    "ModelSettings",
    "OptimSettings",
    "RunSettings",
    "Settings",
    "TextSettings",
    "TuningSettings",
]
