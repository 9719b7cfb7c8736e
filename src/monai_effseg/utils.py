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


_FLAG_TEXT = {"true": True, "false": False}


def as_flag(value: object, name: str) -> bool:
    """A bundle flag as a ``bool``, whichever way it was typed on the command line.

    ``python -m monai.bundle run`` parses its arguments with ``fire``, which reads ``--optimize False`` as a bool but
    ``--optimize false`` as the text ``"false"``, and any non-empty text is true: the flag would be silently ignored.
    The bundle configs read every user flag through this function (MONAI's ``_disabled_`` accepts the text the same
    way). Anything other than a bool, 0/1 or true/false text is an error naming the flag.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAG_TEXT:
        return _FLAG_TEXT[value.strip().lower()]
    raise ValueError(f"--{name} must be True or False, got {value!r}")


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
