"""Sliding-window inference with nnU-Net's mirror test-time augmentation."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInfererAdapt

from monai_effseg.training.amp import AutocastPredictor


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the empty one (no flip) first: 8 passes for 3 axes, as nnU-Net."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


class MirroredPredictor:
    """Average a network's logits over all flips of ``spatial_axes`` (0 = first spatial axis)."""

    def __init__(self, network: Callable[..., torch.Tensor], spatial_axes: Sequence[int]) -> None:
        self.network = network
        self.flips = [tuple(a + 2 for a in combo) for combo in mirror_combinations(spatial_axes)]

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = None
        for dims in self.flips:
            flipped = torch.flip(x, dims) if dims else x
            logits = self.network(flipped, *args, **kwargs)
            logits = torch.flip(logits, dims) if dims else logits
            total = logits if total is None else total + logits
        return total / len(self.flips)


class SlidingWindowMirrorInferer(SlidingWindowInfererAdapt):
    """MONAI's sliding-window inferer (Gaussian blending by default) with optional mirror TTA inside each window and
    optional autocast.

    It is MONAI's ``SlidingWindowInfererAdapt``: with ``device=None`` (the default) a CUDA input is stitched on the
    GPU, and a volume whose output does not fit there is stitched on the CPU instead (buffered first), while the
    windows still run on the GPU; the size that failed is remembered for the next volumes. ``sw_device`` is where
    the windows run (default: the input's device): set it to the GPU to segment a volume held on the CPU.

    Args:
        mirror_axes: spatial axes to mirror; ``()`` turns TTA off. ``(0, 1, 2)`` is nnU-Net's and MSS U-Net's
            "mirror on all axes" (8 passes per window).
        amp: run every network call under :func:`monai_effseg.training.autocast` for the window's device (bf16 on the
            CPU and recent GPUs, fp16 on older ones); the logits are blended and averaged in float32.
        amp_dtype: the autocast dtype instead of :func:`monai_effseg.training.amp_dtype`'s.
        kwargs: everything ``SlidingWindowInferer`` takes (``roi_size``, ``overlap``, ``sw_device``, ``device``...).
    """

    def __init__(self, roi_size, sw_batch_size: int = 1, overlap: float = 0.5, mode: str = "gaussian",
                 mirror_axes: Sequence[int] = (), amp: bool = False, amp_dtype: torch.dtype | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode, **kwargs)
        self.mirror_axes = tuple(mirror_axes)
        self.amp = bool(amp)
        self.amp_dtype = amp_dtype

    def predictor(self, network: Callable[..., Any]) -> Callable[..., Any]:
        """``network`` as this inferer runs it on each window: under autocast, averaged over the mirror flips."""
        predictor = AutocastPredictor(network, self.amp, self.amp_dtype) if self.amp else network
        return MirroredPredictor(predictor, self.mirror_axes) if self.mirror_axes else predictor

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any):
        return super().__call__(inputs, self.predictor(network), *args, **kwargs)
