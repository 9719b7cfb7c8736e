"""Multi-scale (deep-supervision) loss with explicit per-level weights, built on MONAI's ``DeepSupervisionLoss``.

MONAI's class already sums ``w_l * loss(output_l, target_l)`` and downsamples the target to each output's shape
with ``F.interpolate(mode="nearest-exact")`` (for a factor 2 that keeps every second voxel, label values intact).
This subclass adds what it lacks for our recipes:

- the weights must match the number of outputs (upstream silently falls back to ``weight_mode`` when the list is
  shorter), can be normalised to sum 1 (nnU-Net), and zero-weight levels are skipped instead of computed;
- integer label targets work (upstream's ``F.interpolate`` is not implemented for int64 / int32 tensors);
- the loss keeps the outputs' float precision (upstream casts every output to float32), which keeps float64
  gradient checks meaningful; half-precision outputs are still promoted to float32.

Presets: the MSS U-Net paper's 0.4, 0.2, 0.2, 0.1, 0.1 from full resolution down; the authors' code
0.6, 0.1, 0.1, 0.1, 0.1; nnU-Net 1, 1/2, 1/4, ... with the lowest level 0, normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss
from torch.nn.modules.loss import _Loss

__all__ = [
    "MSS_PAPER_DS_WEIGHTS",
    "MSS_CODE_DS_WEIGHTS",
    "nnunet_deep_supervision_weights",
    "WeightedDeepSupervisionLoss",
    "deep_supervision_loss",
]

MSS_PAPER_DS_WEIGHTS = (0.4, 0.2, 0.2, 0.1, 0.1)
MSS_CODE_DS_WEIGHTS = (0.6, 0.1, 0.1, 0.1, 0.1)


def nnunet_deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights: 1/2^l per level (full resolution first), the lowest level 0, normalised to sum 1."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    weights = [0.5**level for level in range(levels)]
    if levels > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class WeightedDeepSupervisionLoss(DeepSupervisionLoss):
    """``DeepSupervisionLoss`` with explicit, validated per-level weights (outputs ordered full resolution first).

    Args:
        loss: the per-level loss, e.g. :class:`~monai_effseg.losses.ExpLogDiceCELoss` or ``DiceCELoss``.
        weights: one weight per network output, >= 0.
        normalize: divide the weights by their sum (nnU-Net does; the MSS weights already sum to 1).
    """

    def __init__(self, loss: _Loss, weights: Sequence[float], normalize: bool = False) -> None:
        weights = [float(w) for w in weights]
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        if normalize:
            weights = [w / sum(weights) for w in weights]
        super().__init__(loss, weights=weights)

    def get_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point() or target.dtype == torch.uint8 or input.shape[2:] == target.shape[2:]:
            return super().get_loss(input, target)
        # upstream's F.interpolate(mode="nearest-exact") is not implemented for int32/int64 tensors: resample the
        # labels as float (nearest keeps the values exact) and cast back
        resized = F.interpolate(target.float(), size=input.shape[2:], mode=self.interp_mode).to(target.dtype)
        return self.loss(input, resized)  # type: ignore[no-any-return]

    def forward(self, input: None | torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, (list, tuple)):
            if input is None:
                raise ValueError("input shouldn't be None.")
            return self.loss(input, target)  # type: ignore[no-any-return]
        weights = self.weights or []
        if len(input) != len(weights):
            raise ValueError(f"{len(input)} deep-supervision outputs but {len(weights)} weights {weights}")
        total: torch.Tensor | None = None
        for weight, output in zip(weights, input):
            if weight == 0:
                continue
            if output.dtype in (torch.float16, torch.bfloat16):
                output = output.float()
            term = weight * self.get_loss(output, target)
            total = term if total is None else total + term
        assert total is not None  # the weights have a positive sum
        return total


def deep_supervision_loss(
    loss: _Loss, weights: Sequence[float] | str = "mss", normalize: bool = False, levels: int | None = None
) -> WeightedDeepSupervisionLoss:
    """Build a :class:`WeightedDeepSupervisionLoss` from explicit weights or a preset name.

    ``weights`` may be a sequence or one of "mss" (paper, default), "mss_code" (authors' repository) or "nnunet"
    (needs ``levels``; always normalised).
    """
    if isinstance(weights, str):
        presets = {"mss": MSS_PAPER_DS_WEIGHTS, "mss_code": MSS_CODE_DS_WEIGHTS}
        if weights == "nnunet":
            if levels is None:
                raise ValueError("the 'nnunet' preset needs the number of output levels")
            return WeightedDeepSupervisionLoss(loss, nnunet_deep_supervision_weights(levels))
        if weights not in presets:
            raise ValueError(f"unknown weight preset {weights!r}; expected 'mss', 'mss_code', 'nnunet' or a sequence")
        weights = presets[weights]
    if levels is not None and len(weights) != levels:
        raise ValueError(f"{len(weights)} weights for {levels} levels")
    return WeightedDeepSupervisionLoss(loss, weights, normalize=normalize)
