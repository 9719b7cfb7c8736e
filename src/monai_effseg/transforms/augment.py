"""nnU-Net's default augmentation, built from MONAI transforms.

Isensee et al., nnU-Net (Nature Methods 2021), supplementary "data augmentation": rotation and scaling p=0.2,
elastic deformation (v1 default), Gaussian noise p=0.1, Gaussian blur p=0.2, brightness p=0.15, contrast p=0.15,
gamma p=0.3, mirroring on every axis p=0.5; patches with 1/3 foreground oversampling, class-aware as nnU-Net's.

Like nnU-Net, a patch larger than the target is cropped first and the spatial transform samples the final patch
from its centre, so rotated patches do not fill their corners with padding; the larger crop may run past the volume's
border (padded), so the final patch reaches every voxel (:mod:`monai_effseg.transforms.crop`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai import transforms as mt

from monai_effseg.transforms.crop import foreground_crop
from monai_effseg.transforms.tumour_paste import TumourCopyPasted


def enlarged_patch(patch_size: Sequence[int], rotate_degrees: float, max_zoom_out: float) -> list[int]:
    """The crop that still covers ``patch_size`` after a rotation of up to ``rotate_degrees`` and zoom-out."""
    angle = math.radians(min(abs(rotate_degrees), 45.0))
    grow = (math.cos(angle) + math.sin(angle)) * max(1.0, max_zoom_out)
    return [int(math.ceil(p * grow)) for p in patch_size]


def tumour_paste(image_key: str, label_key: str, prob: float) -> list[mt.Transform]:
    """The copy-paste step that leads a training pipeline when ``prob`` > 0 (none otherwise)."""
    return [TumourCopyPasted(image_key, label_key, prob=prob)] if prob > 0 else []


def nnunet_augmentation(
    patch_size: Sequence[int],
    keys: Sequence[str] = ("image", "label"),
    foreground_fraction: float = 1 / 3,
    foreground_sampling: str = "per_class",
    rotate_degrees: float = 30.0,
    scale_range: tuple[float, float] = (0.7, 1.4),
    spatial_prob: float = 0.2,
    elastic_prob: float = 0.2,
    noise_prob: float = 0.1,
    blur_prob: float = 0.2,
    brightness_prob: float = 0.15,
    contrast_prob: float = 0.15,
    gamma_range: tuple[float, float] = (0.7, 1.5),
    gamma_prob: float = 0.3,
    mirror_axes: Sequence[int] = (0, 1, 2),
    mirror_prob: float = 0.5,
    tumour_paste_prob: float = 0.0,
) -> list[mt.Transform]:
    """The random part of the training pipeline (after the cached deterministic preprocessing).

    Args:
        patch_size: the network's training patch.
        keys: image key first, label key second.
        foreground_fraction: share of patches centred on a foreground voxel (nnU-Net: 1/3).
        foreground_sampling: ``"per_class"`` (nnU-Net: the forced centre's class is drawn uniformly among the
            foreground classes present, so tumours get their share) or ``"per_voxel"`` (any foreground voxel); see
            :mod:`monai_effseg.transforms.crop`.
        rotate_degrees: rotation range (+-) about every axis (about the last axis only in 2D).
        scale_range: zoom range (nnU-Net: 0.7-1.4).
        spatial_prob: probability of the rotation+scaling step.
        elastic_prob: probability of an elastic deformation (3D only; 0 disables, as in nnU-Net v2).
        mirror_axes: spatial axes flipped independently with ``mirror_prob``.
        tumour_paste_prob: probability of pasting another case's tumour into the organ before the crop
            (:class:`~monai_effseg.transforms.TumourCopyPasted`, TumorCP; not part of nnU-Net, off by default).
    """
    image, label = keys[0], keys[1]
    dims = len(patch_size)
    rotate = math.radians(rotate_degrees)
    zoom_out = 1.0 / scale_range[0]
    crop = enlarged_patch(patch_size, rotate_degrees, zoom_out)
    xforms: list[mt.Transform] = tumour_paste(image, label, tumour_paste_prob)
    xforms += [
        mt.SpatialPadd(keys, spatial_size=crop),
        foreground_crop(keys, label, crop, foreground_fraction, foreground_sampling, final_size=patch_size),
        mt.RandAffined(
            keys,
            spatial_size=list(patch_size),
            prob=spatial_prob,
            rotate_range=[rotate] * (3 if dims == 3 else 1),
            # MONAI zooms by 1 + s per axis; nnU-Net samples one isotropic factor
            scale_range=[(scale_range[0] - 1, scale_range[1] - 1)] * dims,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
            cache_grid=True,
        ),
    ]
    if elastic_prob > 0 and dims == 3:
        xforms.append(
            mt.Rand3DElasticd(
                keys,
                sigma_range=(9, 13),
                magnitude_range=(0, 200),
                prob=elastic_prob,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            )
        )
    xforms += [
        mt.RandGaussianNoised(image, prob=noise_prob, std=0.1),
        mt.RandGaussianSmoothd(image, prob=blur_prob, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        mt.RandScaleIntensityd(image, factors=0.25, prob=brightness_prob),
        mt.RandScaleIntensityFixedMeand(image, factors=0.25, preserve_range=True, prob=contrast_prob),
        mt.RandAdjustContrastd(image, gamma=gamma_range, prob=gamma_prob, retain_stats=True),
    ]
    xforms += [mt.RandFlipd(keys, prob=mirror_prob, spatial_axis=axis) for axis in mirror_axes if axis < dims]
    return xforms
