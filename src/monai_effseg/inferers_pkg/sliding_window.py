"""Sliding-window inference with nnU-Net's mirror test-time augmentation."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer


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


class SlidingWindowMirrorInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` (Gaussian blending by default) with optional mirror TTA inside each window.

    Args:
        mirror_axes: spatial axes to mirror; ``()`` turns TTA off. ``(0, 1, 2)`` is nnU-Net's and MSS U-Net's
            "mirror on all axes" (8 passes per window).
        kwargs: everything ``SlidingWindowInferer`` takes (``roi_size``, ``overlap``, ``sw_device``, ``device``...).
    """

    def __init__(self, roi_size, sw_batch_size: int = 1, overlap: float = 0.5, mode: str = "gaussian",
                 mirror_axes: Sequence[int] = (), **kwargs: Any) -> None:  # fmt: skip
        super().__init__(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode, **kwargs)
        self.mirror_axes = tuple(mirror_axes)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any):
        predictor = MirroredPredictor(network, self.mirror_axes) if self.mirror_axes else network
        return super().__call__(inputs, predictor, *args, **kwargs)
