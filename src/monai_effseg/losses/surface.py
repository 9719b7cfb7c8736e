"""Generalized Dice + surface Dice loss: the training form of Hao's section 3.3 score.

Hao, "Deep Learning-Based Cascade 3D Kidney Segmentation Method" (MSc thesis, University of Melbourne, 2024),
averages the generalized Dice (Sudre et al. 2017, its eq. 2.2) and the surface Dice and
says, in section 5.1, that this combination was used "as the loss function". The surface Dice is not
differentiable (hard boundaries, thresholded distances), and the thesis gives no surrogate, tolerance or code, so
this module defines one and documents it:

- boundaries are soft morphological: ``b(p) = p - erode(p)``, with ``erode`` the minimum over the 6-neighbourhood
  (outside the image counts as background);
- "within tolerance" is a max-pool dilation of the other boundary by ``tolerance`` voxels per axis
  (chessboard distance);
- ``SD = (sum b_p * dil(b_g) + sum b_g * dil(b_p) + s) / (sum b_p + sum b_g + s)`` per foreground class, averaged.

On one-hot (hard) inputs this equals MONAI's voxel-counting ``compute_surface_dice`` with
``distance_metric="chessboard"`` and threshold = ``tolerance``, which the tests check. The generalized Dice part
is MONAI's ``GeneralizedDiceLoss`` (square weights). The reported evaluation score (DeepMind surface Dice in mm)
is :func:`monai_effseg.metrics.generalized_dice_surface_score`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import GeneralizedDiceLoss
from monai.networks import one_hot
from monai.utils import ensure_tuple_rep
from torch.nn.modules.loss import _Loss

__all__ = ["soft_boundary", "soft_surface_dice", "GeneralizedSurfaceDiceLoss"]


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Grey-level erosion with the 6-neighbourhood (cross), zero outside: min over the centre and its face neighbours."""
    spatial = x.ndim - 2
    padded = F.pad(x, [1, 1] * spatial, value=0.0)
    out = x
    for axis in range(spatial):
        for shift in (0, 2):
            index = [slice(None), slice(None)] + [slice(1, -1)] * spatial
            index[2 + axis] = slice(shift, shift + x.shape[2 + axis])
            out = torch.minimum(out, padded[tuple(index)])
    return out


def soft_boundary(x: torch.Tensor) -> torch.Tensor:
    """``x - erode(x)``: on a binary mask, the voxels that have a background face neighbour (MONAI's edges)."""
    return x - _soft_erode(x)


def _dilate(x: torch.Tensor, radius: Sequence[int]) -> torch.Tensor:
    if not any(radius):
        return x
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[x.ndim - 2]
    kernel = [2 * r + 1 for r in radius]
    return pool(x, kernel_size=kernel, stride=1, padding=list(radius))


def soft_surface_dice(
    probs: torch.Tensor,
    target: torch.Tensor,
    tolerance: int | Sequence[int] = 1,
    smooth: float = 1e-5,
    batch: bool = False,
) -> torch.Tensor:
    """Soft surface Dice per channel of ``(B, C, ...)`` probabilities vs one-hot ``target``: ``(C,)`` or ``(B, C)``."""
    radius = ensure_tuple_rep(tolerance, probs.ndim - 2)
    b_pred, b_gt = soft_boundary(probs), soft_boundary(target)
    axes = [0, *range(2, probs.ndim)] if batch else list(range(2, probs.ndim))
    agree = (b_pred * _dilate(b_gt, radius)).sum(axes) + (b_gt * _dilate(b_pred, radius)).sum(axes)
    return (agree + smooth) / (b_pred.sum(axes) + b_gt.sum(axes) + smooth)


class GeneralizedSurfaceDiceLoss(_Loss):
    """``1 - (GDC + SD) / 2``: generalized Dice and soft surface Dice averaged (Hao's sections 3.3 and 5.1).

    Args:
        include_background: include channel 0 in both terms.
        tolerance: surface tolerance in voxels per spatial axis (Hao's thesis gives none; 1 voxel at nnU-Net-like
            spacings is close to the KiTS21 ~1.1 mm).
        w_type: generalized Dice class weighting ("square" = Sudre et al., as in Hao's eq. 2.2).
        smooth: smoothing of the surface term.
        batch: sum the surface term over the batch (like ``GeneralizedDiceLoss(batch=True)``).

    ``input`` are logits ``(B, C, ...)`` (softmax applied here); ``target`` a label map ``(B, 1, ...)``.
    """

    def __init__(
        self,
        include_background: bool = False,
        tolerance: int | Sequence[int] = 1,
        w_type: str = "square",
        smooth: float = 1e-5,
        batch: bool = False,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.tolerance = tolerance
        self.smooth = smooth
        self.batch = batch
        self.generalized_dice = GeneralizedDiceLoss(
            include_background=include_background, to_onehot_y=True, softmax=True, w_type=w_type, batch=batch
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == input.ndim - 1:
            target = target.unsqueeze(1)
        gdc = 1.0 - self.generalized_dice(input, target)
        probs = torch.softmax(input, dim=1)
        onehot = one_hot(
            target.round().long() if target.is_floating_point() else target.long(), input.shape[1], dtype=input.dtype
        )
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        sd = soft_surface_dice(probs, onehot, self.tolerance, self.smooth, self.batch).mean()
        return 1.0 - 0.5 * (gdc + sd)
