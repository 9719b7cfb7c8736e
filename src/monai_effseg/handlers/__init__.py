"""Ignite handlers used by the bundles."""

from monai_effseg.handlers.resume import (
    ResumeFromLatest,
    TrainingCheckpointSaver,
    interval_checkpoints,
    latest_checkpoint,
)

__all__ = ["ResumeFromLatest", "TrainingCheckpointSaver", "interval_checkpoints", "latest_checkpoint"]
