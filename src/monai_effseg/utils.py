"""Small helpers the bundle configs call."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


_noted_cpu = False


def select_device(prefer: str = "cuda") -> torch.device:
    """The first CUDA device when there is one, else the CPU, with a note logged once per process (at INFO: a CPU
    run, such as every CPU demo, is a supported choice, not a fault; the note only explains a slow run)."""
    global _noted_cpu
    if prefer.startswith("cuda") and torch.cuda.is_available():
        return torch.device(prefer if ":" in prefer else "cuda:0")
    if prefer.startswith("cuda") and not _noted_cpu:
        _noted_cpu = True
        logger.info("no CUDA device: running on the CPU")
    return torch.device("cpu")
