"""Mixed precision: one dtype policy for training, validation and inference, on CUDA and on the CPU.

- :func:`amp_dtype`: bfloat16 on the CPU and on GPUs that support it natively (Ampere and newer), float16 otherwise.
- :func:`amp_kwargs`: ``{"dtype": ...}`` for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` ``amp_kwargs``.
- :func:`autocast`: ``torch.autocast`` for a device (CUDA or CPU), what the inferers wrap each network call in.
- :class:`AmpSupervisedTrainer`: MONAI's ``SupervisedTrainer`` that keeps the ``GradScaler`` only for float16
  (bfloat16 has float32's exponent range: loss scaling is useless there, and an ever-growing scale eventually
  overflows and skips steps).

MONAI's engines hard-code ``torch.autocast("cuda")``: on the CPU their ``amp`` is a no-op (the bundles default ``amp``
to ``torch.cuda.is_available()``). :func:`autocast` is what runs bf16 on the CPU (tests, inferers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import torch
from monai.engines import SupervisedTrainer

__all__ = ["AmpSupervisedTrainer", "AutocastPredictor", "amp_dtype", "amp_kwargs", "autocast", "grad_scaler",
           "to_float"]  # fmt: skip

logger = logging.getLogger(__name__)

DeviceLike = Union[str, torch.device, None]


def _device(device: DeviceLike) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _cuda_bf16_supported() -> bool:
    """Native bf16 (compute capability >= 8.0); emulated bf16 on older GPUs is slower than fp16."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the argument
        return bool(torch.cuda.is_bf16_supported())


def amp_dtype(device: DeviceLike = None) -> torch.dtype:
    """The autocast dtype for ``device`` (default: CUDA when available, else CPU): ``torch.bfloat16`` on the CPU and on
    GPUs with native bf16, ``torch.float16`` on older GPUs (which then need a ``GradScaler``)."""
    dev = _device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if _cuda_bf16_supported() else torch.float16
    return torch.bfloat16


def amp_kwargs(device: DeviceLike = None) -> dict[str, torch.dtype]:
    """``amp_kwargs`` of MONAI's engines: ``{"dtype": amp_dtype(device)}``."""
    return {"dtype": amp_dtype(device)}


def autocast(device: DeviceLike = None, enabled: bool = True, dtype: Optional[torch.dtype] = None):
    """``torch.autocast`` for ``device``'s type (``cuda`` or ``cpu``) with :func:`amp_dtype`'s dtype unless ``dtype``
    is given; a null context when ``enabled`` is false or the device type has no autocast."""
    dev = _device(device)
    if not enabled:
        return contextlib.nullcontext()
    if dev.type not in ("cuda", "cpu", "xpu", "mps"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype or amp_dtype(dev), enabled=True)


def grad_scaler(dtype: Optional[torch.dtype], device: DeviceLike = "cuda") -> torch.amp.GradScaler:
    """A ``GradScaler`` that is enabled only for float16 autocast on CUDA (a disabled one passes ``scale``,
    ``step`` and ``update`` straight through)."""
    dev = _device(device)
    enabled = dtype in (None, torch.float16) and dev.type == "cuda" and torch.cuda.is_available()
    return torch.amp.GradScaler("cuda", enabled=enabled)


def to_float(out: Any) -> Any:
    """Half-precision tensors (also inside lists, tuples and dicts) as float32; everything else unchanged."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float64 else out
    if isinstance(out, Mapping):
        return {k: to_float(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(to_float(v) for v in out)
    return out


class AutocastPredictor:
    """``network`` called under :func:`autocast` for its input's device; float32 outputs (so sliding-window
    blending and mirror averaging accumulate in float32)."""

    def __init__(self, network: Callable[..., Any], enabled: bool = True, dtype: Optional[torch.dtype] = None) -> None:
        self.network = network
        self.enabled = enabled
        self.dtype = dtype

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.network(x, *args, **kwargs)
        with autocast(x.device, True, self.dtype):
            out = self.network(x, *args, **kwargs)
        return to_float(out)


class AmpSupervisedTrainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` whose ``GradScaler`` is active only for float16 autocast.

    ``Trainer.run`` creates ``torch.cuda.amp.GradScaler()`` whenever ``amp`` is on; this class replaces it with
    :func:`grad_scaler` for ``amp_kwargs["dtype"]`` (a disabled scaler for bfloat16). Everything else is MONAI's.
    """

    @property
    def scaler(self) -> Optional[torch.amp.GradScaler]:
        return getattr(self, "_amp_scaler", None)

    @scaler.setter
    def scaler(self, value: Optional[torch.amp.GradScaler]) -> None:
        if value is not None and not getattr(value, "_effseg_policy", False):
            dtype = (getattr(self, "amp_kwargs", None) or {}).get("dtype", torch.float16)
            state = getattr(self, "state", None)
            value = grad_scaler(dtype, getattr(state, "device", None) or "cuda")
            value._effseg_policy = True
            if not value.is_enabled():
                logger.info("amp with %s: no gradient scaling", dtype)
        self._amp_scaler = value
