"""Sauron's KiTS19 data recipe (Valverde, Shatillo, Tohka, "Sauron U-Net", Neurocomputing 2024, appendix C,
Table 3; authors' ``lib/data/KiTS19Dataset.py``).

Preprocessing: discard cases 15, 23, 37, 68, 125, 133; resample to (1.62, 1.62, 3.22) mm (x, y, z); clip to
[-79, 304] HU, then ``(x - 101) / 76.9``; pad to 160 x 160 x 80. Augmentation as the authors' code runs it (TorchIO
in ``lib/data/KiTS19Dataset.py``, here MONAI transforms), in its order: scaling [0.85, 1.25] of the two in-plane axes
(x, y; z unscaled) with p = 0.2, then, independently, a rotation of [-180, 180] degrees about the z axis (in the axial
plane) with p = 0.2, gamma with log-gamma in [-0.3, 0.5] p = 0.3, a flip of each of the three axes with p = 0.5,
elastic deformation p = 0.3. TorchIO's affine axes are world axes, hence (x, y) and z in MONAI's RAS layout. The
paper's appendix (Table 3) describes one affine about every axis and a single flip; the code is followed. Not
reproduced: their final per-volume z-normalisation (docs/deviations.md, Sauron).
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
    scale_axes: Sequence[int] = (0, 1),
    rotate_axes: Sequence[int] = (2,),
    separate_affines: bool = True,
    log_gamma_range: tuple[float, float] = (-0.3, 0.5),
    gamma_prob: float = 0.3,
    flip_axes: Sequence[int] = (0, 1, 2),
    flip_prob: float = 0.5,
    elastic_prob: float = 0.3,
) -> list[mt.Transform]:
    """Pad, take a random patch, then Table 3's augmentation.

    Args:
        patch_size: the training patch; smaller volumes are padded (with the image minimum: air).
        keys: image key first, label key second.
        scale_range: TorchIO zoom factors (> 1 enlarges); MONAI's affine grid scale is the inverse, ``1/s``.
        rotate_degrees: +- range about each of ``rotate_axes`` (TorchIO ``degrees=(0, 0, 0, 0, -180, 180)``).
        affine_prob: probability of each affine transform.
        scale_axes: the spatial axes scaled (the authors: x and y; 2D: both).
        rotate_axes: the spatial axes rotated about (the authors: z, i.e. in the axial plane; ignored in 2D, where
            the only rotation is in-plane).
        separate_affines: scaling and rotation as two transforms, each with ``affine_prob`` (the authors' code);
            ``False``: one transform doing both (the pre-issue-27 recipe: ``scale_axes=rotate_axes=(0, 1, 2)``,
            ``flip_axes=(0,)``).
        log_gamma_range: TorchIO ``RandomGamma(log_gamma)``; here ``gamma = exp(.)`` on min-max rescaled
            intensities (MONAI's ``RandAdjustContrast``; TorchIO powers raw values, undefined for negative ones).
        flip_axes: each flipped with ``flip_prob`` (the authors' code: three ``RandomFlip``, axes 0, 1, 2).
        elastic_prob: MONAI ``Rand3DElasticd`` (sigma 6-8 voxels, magnitude 100-300: measured mean/max
            displacement about 2/4.6 voxels) stands in for TorchIO's B-spline deformation (7 control points,
            at most 7.5 mm = 4.6 voxels in-plane at 1.62 mm).
    """
    image = keys[0]
    dims = len(patch_size)
    low, high = 1.0 / scale_range[1] - 1.0, 1.0 / scale_range[0] - 1.0
    gamma = (math.exp(log_gamma_range[0]), math.exp(log_gamma_range[1]))
    scale = [(low, high) if axis in scale_axes or dims == 2 else (0.0, 0.0) for axis in range(dims)]
    angle = math.radians(rotate_degrees)
    rotate = [angle if axis in rotate_axes else 0.0 for axis in range(3)] if dims == 3 else [angle]
    affine = {"mode": ("bilinear", "nearest"), "padding_mode": "border"}
    if separate_affines:
        affines = [mt.RandAffined(keys, prob=affine_prob, scale_range=scale, **affine),
                   mt.RandAffined(keys, prob=affine_prob, rotate_range=rotate, **affine)]  # fmt: skip
    else:
        affines = [mt.RandAffined(keys, prob=affine_prob, rotate_range=rotate, scale_range=scale, **affine)]
    xforms: list[mt.Transform] = [
        mt.SpatialPadd(keys, spatial_size=list(patch_size), mode=("minimum", "constant")),
        mt.RandSpatialCropd(keys, roi_size=list(patch_size), random_size=False),
        *affines,
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
