"""Sauron's KiTS19 data recipe (seed 004, appendix C, Table 3; authors' ``lib/data/KiTS19Dataset.py``).

Preprocessing: discard cases 15, 23, 37, 68, 125, 133; resample to (1.62, 1.62, 3.22) mm (x, y, z); clip to
[-79, 304] HU, then ``(x - 101) / 76.9``; pad to 160 x 160 x 80. Augmentation (TorchIO in the authors' code, here
MONAI transforms): scaling [0.85, 1.25] and rotation [-180, 180] degrees with p = 0.2, elastic deformation p = 0.3,
gamma with log-gamma in [-0.3, 0.5] p = 0.3, flip p = 0.5, in the order of appendix C.2 (affine, gamma, flip, elastic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai import transforms as mt

__all__ = ["SAURON_KITS_EXCLUDED", "SAURON_KITS_RECIPE", "sauron_kits_augmentation"]

SAURON_KITS_EXCLUDED = (15, 23, 37, 68, 125, 133)
"""KiTS19 cases with faulty ground truth that the authors discard (appendix C.1)."""

SAURON_KITS_RECIPE = {
    "spacing": [1.62, 1.62, 3.22],
    "normalization": {"a_min": -79.0, "a_max": 304.0, "subtrahend": 101.0, "divisor": 76.9},
}
"""Fingerprint entries that override a dataset's own: Sauron's fixed spacing (RAS order) and intensity window."""


def sauron_kits_augmentation(
    patch_size: Sequence[int] = (160, 160, 80),
    keys: Sequence[str] = ("image", "label"),
    scale_range: tuple[float, float] = (0.85, 1.25),
    rotate_degrees: float = 180.0,
    affine_prob: float = 0.2,
    log_gamma_range: tuple[float, float] = (-0.3, 0.5),
    gamma_prob: float = 0.3,
    flip_axes: Sequence[int] = (0,),
    flip_prob: float = 0.5,
    elastic_prob: float = 0.3,
) -> list[mt.Transform]:
    """Pad, take a random patch, then Table 3's augmentation.

    Args:
        patch_size: the training patch; smaller volumes are padded (with the image minimum: air).
        keys: image key first, label key second.
        scale_range: TorchIO zoom factors (> 1 enlarges); MONAI's affine grid scale is the inverse, ``1/s``.
        rotate_degrees: +- range about every axis (TorchIO ``degrees=180``).
        log_gamma_range: TorchIO ``RandomGamma(log_gamma)``; here ``gamma = exp(.)`` on min-max rescaled
            intensities (MONAI's ``RandAdjustContrast``; TorchIO powers raw values, undefined for negative ones).
        flip_axes: TorchIO's ``RandomFlip`` default flips the first spatial axis (left-right after RAS orientation).
        elastic_prob: MONAI ``Rand3DElasticd`` (sigma 6-8 voxels, magnitude 100-300: measured mean/max
            displacement about 2/4.6 voxels) stands in for TorchIO's B-spline deformation (7 control points,
            at most 7.5 mm = 4.6 voxels in-plane at 1.62 mm).
    """
    image, label = keys[0], keys[1]
    dims = len(patch_size)
    low, high = 1.0 / scale_range[1] - 1.0, 1.0 / scale_range[0] - 1.0
    gamma = (math.exp(log_gamma_range[0]), math.exp(log_gamma_range[1]))
    xforms: list[mt.Transform] = [
        mt.SpatialPadd(keys, spatial_size=list(patch_size), mode=("minimum", "constant")),
        mt.RandSpatialCropd(keys, roi_size=list(patch_size), random_size=False),
        mt.RandAffined(
            keys,
            prob=affine_prob,
            rotate_range=[math.radians(rotate_degrees)] * (3 if dims == 3 else 1),
            scale_range=[(low, high)] * dims,
            mode=("bilinear", "nearest"),
            padding_mode="border",
        ),
        mt.RandAdjustContrastd(image, prob=gamma_prob, gamma=gamma),
        *[mt.RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in flip_axes if axis < dims],
    ]
    if elastic_prob > 0 and dims == 3:
        xforms.append(
            mt.Rand3DElasticd(
                keys,
                sigma_range=(6, 8),
                magnitude_range=(100, 300),
                prob=elastic_prob,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
    return xforms
