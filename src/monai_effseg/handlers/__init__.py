"""Ignite handlers used by the bundles."""

from monai_effseg.handlers.ref import handler_ref
from monai_effseg.handlers.resume import (
    ResumeFromLatest,
    TrainingCheckpointSaver,
    interval_checkpoints,
    latest_checkpoint,
)

__all__ = ["ResumeFromLatest", "TrainingCheckpointSaver", "handler_ref", "interval_checkpoints", "latest_checkpoint"]
