"""Small helpers shared by the package and called by the bundle configs."""

from __future__ import annotations

import logging

import numpy as np
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


def as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """``x`` as a numpy array in its own memory order. Not MONAI's ``convert_to_numpy``: it forces C order, and NIfTI
    arrays are Fortran-ordered, so it would copy (transpose) every full volume."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def as_label_array(seg: np.ndarray | torch.Tensor) -> np.ndarray:
    """``seg`` as integer labels (float label maps from NIfTI readers are rounded)."""
    arr = as_numpy(seg)
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return arr
    return np.rint(arr).astype(np.int16)
