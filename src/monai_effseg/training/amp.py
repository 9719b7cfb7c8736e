"""Mixed precision: one dtype policy for training, validation and inference, on CUDA and on the CPU.

- :func:`amp_dtype`: bfloat16 on the CPU and on GPUs that support it natively (Ampere and newer), float16 otherwise.
- :func:`amp_kwargs`: ``{"dtype": ...}`` for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` ``amp_kwargs``.
- :func:`autocast`: ``torch.autocast`` for a device (CUDA or CPU), what the inferers wrap each network call in.
- :func:`default_amp`: whether a bundle trains with autocast on ``device`` by default: on CUDA, and on CPUs with native
  bf16 dot products (AMX, AVX-512 BF16) for the bundles measured to gain from it.
- :class:`AmpSupervisedTrainer`: MONAI's ``SupervisedTrainer`` that keeps the ``GradScaler`` only for float16
  (bfloat16 has float32's exponent range: loss scaling is useless there, and an ever-growing scale eventually
  overflows and skips steps), and that autocasts on the CPU too.

MONAI's engines hard-code ``torch.autocast("cuda")``: on the CPU their ``amp`` is a no-op. The trainer here runs the
network call under CPU autocast instead; the inferers (validation, inference) wrap their network calls in
:func:`autocast` themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import torch
from monai.engines import SupervisedTrainer

__all__ = ["AmpSupervisedTrainer", "AutocastPredictor", "amp_dtype", "amp_kwargs", "autocast", "default_amp",
           "evaluator_amp", "grad_scaler", "to_float"]  # fmt: skip

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


def default_amp(device: DeviceLike = None, cpu_bf16: bool = True) -> bool:
    """Train with autocast by default: on CUDA; on the CPU when ``cpu_bf16`` (a bundle's
    ``bf16_training_where_native``, set where its speed and accuracy were measured) and the CPU has native bf16 dot
    products (:func:`monai_effseg.deploy.native_bf16`). Without them bf16 is emulated in float32 and slower than
    float32. ``python benchmarks/bench_cpu_amp.py`` measures each bundle's training step both ways."""
    if _device(device).type == "cuda":
        return True
    from monai_effseg.deploy.optimize import native_bf16

    return bool(cpu_bf16) and native_bf16() is not None


def evaluator_amp(amp: bool, device: DeviceLike = None) -> bool:
    """``amp`` for MONAI's ``SupervisedEvaluator``: ``amp`` on CUDA, false elsewhere. The evaluator only wraps its
    inferer in ``torch.autocast("cuda")``, which off CUDA does nothing but warn "Disabling autocast"; the package's
    inferers autocast their network calls on any device themselves."""
    return bool(amp) and _device(device).type == "cuda"


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


class _AutocastInferer:
    """A trainer's inferer whose network calls run under :func:`autocast` and return float32 outputs, so that the loss
    and its gradient start in float32."""

    def __init__(self, inferer: Callable[..., Any], dtype: Optional[torch.dtype]) -> None:
        self.inferer = inferer
        self.dtype = dtype

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.inferer(inputs, AutocastPredictor(network, True, self.dtype), *args, **kwargs)


class AmpSupervisedTrainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` whose ``GradScaler`` is active only for float16 autocast, and whose ``amp``
    also works on the CPU.

    ``Trainer.run`` creates ``torch.cuda.amp.GradScaler()`` whenever ``amp`` is on; this class replaces it with
    :func:`grad_scaler` for ``amp_kwargs["dtype"]`` (a disabled scaler for bfloat16). MONAI's iteration autocasts
    ``"cuda"`` only; on any other device the network call is autocast here instead (forward in
    ``amp_kwargs["dtype"]``, bfloat16 by default; outputs, loss and weights in float32), and MONAI's own ``amp`` path
    is switched off (:attr:`autocast_dtype` says what runs). ``grad_clip_norm`` (a number) clips the global gradient
    norm before every optimizer step, as nnU-Net's training step does at 12
    (:class:`monai_effseg.handlers.GradientClipping`); ``None`` (the default, MONAI's behaviour) does not. Everything
    else is MONAI's.
    """

    def __init__(self, *args: Any, grad_clip_norm: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if grad_clip_norm is not None:
            from monai_effseg.handlers.clip import GradientClipping

            GradientClipping(grad_clip_norm).attach(self)
        self.autocast_dtype: Optional[torch.dtype] = None
        device = torch.device(self.state.device or "cpu")
        if self.amp and device.type != "cuda":
            self.autocast_dtype = (self.amp_kwargs or {}).get("dtype") or amp_dtype(device)
            self.inferer = _AutocastInferer(self.inferer, self.autocast_dtype)
            self.amp = False
        elif self.amp:
            self.autocast_dtype = (self.amp_kwargs or {}).get("dtype", torch.float16)

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
