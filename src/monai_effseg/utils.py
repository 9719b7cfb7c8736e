"""Small helpers the bundle configs call."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def select_device(prefer: str = "cuda") -> torch.device:
    """The first CUDA device when there is one, else the CPU (with a logged note, so a slow run is explained)."""
    if prefer.startswith("cuda") and torch.cuda.is_available():
        return torch.device(prefer if ":" in prefer else "cuda:0")
    if prefer.startswith("cuda"):
        logger.warning("CUDA is not available: running on the CPU")
    return torch.device("cpu")
