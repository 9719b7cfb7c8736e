"""Ignite handlers used by the bundles."""

from monai_effseg.handlers.checkpoint import CheckedCheckpointLoader, CheckpointMismatchError
from monai_effseg.handlers.clip import GradientClipping
from monai_effseg.handlers.epoch_log import EpochLossLogger
from monai_effseg.handlers.optimize import OptimizeForInference
from monai_effseg.handlers.ref import handler_ref
from monai_effseg.handlers.resume import (
    BestModelSaver,
    ResumeFromLatest,
    TrainingCheckpointSaver,
    interval_checkpoints,
    latest_checkpoint,
)
from monai_effseg.handlers.setup import RunSetup
from monai_effseg.handlers.summary import InferenceSummary, SkippedInputsError

__all__ = [
    "BestModelSaver",
    "CheckedCheckpointLoader",
    "CheckpointMismatchError",
    "InferenceSummary",
    "SkippedInputsError",
    "EpochLossLogger",
    "GradientClipping",
    "OptimizeForInference",
    "ResumeFromLatest",
    "RunSetup",
    "TrainingCheckpointSaver",
    "handler_ref",
    "interval_checkpoints",
    "latest_checkpoint",
]
