"""The one training engine (``Trainer``), its config and the stage protocol stages plug into."""

from weakwater.train.config import ConfigError, TrainConfig
from weakwater.train.stage import Stage, StageContext

__all__ = ["ConfigError", "Stage", "StageContext", "TrainConfig"]
