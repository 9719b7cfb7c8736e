"""Ignite handlers used by the bundles."""

from monai_effseg.handlers.resume import ResumeFromLatest, latest_checkpoint

__all__ = ["ResumeFromLatest", "latest_checkpoint"]
