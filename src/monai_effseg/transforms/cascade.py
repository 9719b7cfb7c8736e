"""Fixed-size ROI crops of the cascade of Hao, "Deep Learning-Based Cascade 3D Kidney Segmentation Method" (MSc
thesis, University of Melbourne, 2024), sections 3.1 and 3.4, and its training augmentation.

"The new method will determine a fixed bounding box size that can cover all target areas in each training CT image,
with the center of the bounding box being determined by the label in each image [...] whether it is the ground truth
or the prediction generated in stage 1" (section 3.4). Sizes are given in mm so one configuration serves every
target spacing; the stage-2 box comes from the dataset fingerprint's ``foreground_bbox_max_mm``.

The same helpers crop in training (dictionary transforms here) and at inference
(:class:`monai_effseg.inferers.CascadeInferer`), so both see identical boxes, padding and resampling.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import BorderPad, MapTransform, Randomizable, SpatialCrop

from monai_effseg.boxes import foreground_bbox
from monai_effseg.transforms.augment import enlarged_patch, tumour_paste
from monai_effseg.transforms.crop import foreground_crop
from monai_effseg.utils import as_numpy

__all__ = [
    "KITS19_SHIPPED_FOREGROUND_BOX_MM",
    "FixedBoxCropd",
    "RandFixedBoxCropd",
    "augmentation_crop_size",
    "body_centre",
    "box_start",
    "crop_box",
    "foreground_centre",
    "mm_to_voxels",
    "residual_unet_augmentation",
    "spacing_of",
    "stage2_box_mm",
]

# Largest foreground extent (x, y, z) of the 10 KiTS19 labels in tests/data/kits19_labels: only a fallback for a cascade
# run without a training fingerprint; training computes the box over every training case.
KITS19_SHIPPED_FOREGROUND_BOX_MM = (274.1, 179.6, 164.0)


def spacing_of(img: NdarrayOrTensor) -> tuple[float, ...]:
    """Voxel size (mm) of a channel-first MetaTensor (first item of a batch); 1 mm for plain arrays."""
    spatial = img.ndim - 1
    affine = getattr(img, "affine", None)
    if affine is None:
        return (1.0,) * spatial
    affine = torch.as_tensor(affine)
    if affine.ndim == 3:
        affine = affine[0]
    return tuple(float(s) for s in affine_to_spacing(affine, r=spatial))


def mm_to_voxels(size_mm: Sequence[Optional[float]], spacing: Sequence[float], shape: Sequence[int]) -> list[int]:
    """Box size in voxels; ``None`` or a value <= 0 means the whole axis."""
    return [
        n if (mm is None or mm <= 0) else int(math.ceil(mm / sp - 1e-6)) for mm, sp, n in zip(size_mm, spacing, shape)
    ]


def foreground_centre(mask: NdarrayOrTensor) -> Optional[list[float]]:
    """Centre of the bounding box of the non-zero voxels of a spatial array, or ``None`` if there are none."""
    box = foreground_bbox(as_numpy(mask) != 0)
    return None if box is None else [(lo + hi - 1) / 2 for lo, hi in box]


def body_centre(image: NdarrayOrTensor) -> list[float]:
    """Centre of the voxels above the image minimum (after CT normalisation: tissue denser than the clip floor)."""
    spatial = torch.as_tensor(image)[0]
    centre = foreground_centre(spatial > spatial.min())
    return centre if centre is not None else [(n - 1) / 2 for n in spatial.shape]


def box_start(centre: Sequence[float], size: Sequence[int], shape: Sequence[int]) -> list[int]:
    """Start of a ``size`` box around ``centre``: moved inside the volume where it fits (more real context than
    padding), else with the volume in its middle."""
    starts = []
    for c, s, n in zip(centre, size, shape):
        if s >= n:
            starts.append(-((s - n) // 2))
        else:
            starts.append(int(min(max(round(c - (s - 1) / 2), 0), n - s)))
    return starts


def crop_box(img: NdarrayOrTensor, start: Sequence[int], size: Sequence[int], pad_value: float = 0.0):
    """``img[:, start:start + size]`` (channel first), padded with ``pad_value`` where the box leaves the volume.

    MONAI's ``SpatialCrop`` and ``BorderPad`` do the work, so a MetaTensor's affine follows the box.
    """
    shape = img.shape[1:]
    lo = [max(s, 0) for s in start]
    hi = [min(s + z, n) for s, z, n in zip(start, size, shape)]
    out = SpatialCrop(roi_start=lo, roi_end=hi)(img)
    border = [v for s, z, n in zip(start, size, shape) for v in (max(-s, 0), max(s + z - n, 0))]
    if any(border):
        out = BorderPad(border, mode="constant", value=pad_value)(out)
    return out


def stage2_box_mm(fingerprint: Mapping[str, Any], margin_mm: float = 10.0) -> list[float]:
    """Stage-2 box (x, y, z mm): the smallest box covering every training case's foreground (the fingerprint's
    ``foreground_bbox_max_mm``), grown by ``margin_mm`` on each side for stage-1 centring errors."""
    box = fingerprint.get("foreground_bbox_max_mm") or KITS19_SHIPPED_FOREGROUND_BOX_MM
    return [float(v) + 2 * margin_mm for v in box]


class FixedBoxCropd(MapTransform):
    """Crop every key to one fixed-size box (mm) centred on the label's foreground or on the body.

    Args:
        keys: arrays cropped with the same box (image, label, stage-1 segmentation...).
        box_mm: box size per spatial axis in mm; ``None`` keeps the whole axis.
        centre: ``"label"`` (bounding-box centre of ``label_key > 0``; the body if it is empty) or ``"body"``
            (bounding-box centre of ``image_key`` above its minimum: stage 1's fixed ROI, no label needed).
        image_key: padded with its minimum (air after normalisation); every other key with 0.
        label_key: the label whose foreground centres the box.
        min_size: lower bound of the box in voxels, e.g. :func:`augmentation_crop_size`, so that the augmentation
            that follows crops real image around the box instead of padding.
    """

    def __init__(
        self,
        keys: KeysCollection,
        box_mm: Sequence[Optional[float]],
        centre: str = "label",
        image_key: str = "image",
        label_key: str = "label",
        min_size: Optional[Sequence[int]] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if centre not in ("label", "body"):
            raise ValueError(f"centre must be 'label' or 'body', got {centre!r}")
        self.box_mm = list(box_mm)
        self.centre = centre
        self.image_key = image_key
        self.label_key = label_key
        self.min_size = [0] * len(self.box_mm) if min_size is None else list(min_size)

    def shift_mm(self) -> np.ndarray:
        return np.zeros(len(self.box_mm))

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        image = d[self.image_key]
        spacing, shape = spacing_of(image), image.shape[1:]
        centre = foreground_centre(d[self.label_key][0]) if self.centre == "label" else None
        if centre is None:
            centre = body_centre(image)
        centre = [c + s / sp for c, s, sp in zip(centre, self.shift_mm(), spacing)]
        size = [max(s, m) for s, m in zip(mm_to_voxels(self.box_mm, spacing, shape), self.min_size)]
        start = box_start(centre, size, shape)
        for key in self.key_iterator(d):
            pad = float(torch.as_tensor(d[key]).min()) if key == self.image_key else 0.0
            d[key] = crop_box(d[key], start, size, pad)
        return d


class RandFixedBoxCropd(Randomizable, FixedBoxCropd):
    """:class:`FixedBoxCropd` whose centre moves uniformly within +-``jitter_mm`` per axis: stage 2's training boxes
    ("centred on the ground truth with jitter"), so it learns to tolerate stage 1's centring errors."""

    def __init__(self, keys: KeysCollection, box_mm: Sequence[Optional[float]], jitter_mm: float, centre: str = "label",
                 image_key: str = "image", label_key: str = "label", min_size: Optional[Sequence[int]] = None,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        FixedBoxCropd.__init__(self, keys, box_mm, centre, image_key, label_key, min_size, allow_missing_keys)
        self.jitter_mm = float(jitter_mm)

    def shift_mm(self) -> np.ndarray:
        return self.R.uniform(-self.jitter_mm, self.jitter_mm, len(self.box_mm))


def augmentation_crop_size(
    patch_size: Sequence[int], rotate_degrees: float = 30.0, scale_range: tuple[float, float] = (0.7, 1.4)
) -> list[int]:
    """The crop :func:`residual_unet_augmentation` takes before rotating and scaling it down to ``patch_size``."""
    return enlarged_patch(patch_size, rotate_degrees, 1.0 / scale_range[0])


def residual_unet_augmentation(
    patch_size: Sequence[int],
    image_key: str = "image",
    label_key: str = "label",
    prior_key: Optional[str] = None,
    foreground_fraction: float = 1 / 3,
    foreground_sampling: str = "per_class",
    rotate_degrees: float = 30.0,
    scale_range: tuple[float, float] = (0.7, 1.4),
    spatial_prob: float = 0.2,
    gamma_range: tuple[float, float] = (0.7, 1.5),
    gamma_prob: float = 0.3,
    mirror_axes: Sequence[int] = (0, 1, 2),
    mirror_prob: float = 0.5,
    tumour_paste_prob: float = 0.0,
) -> list[mt.Transform]:
    """Hao's augmentation (section 4.3: "rotation, scaling, gamma correction, and mirroring") with nnU-Net's
    ranges and probabilities, which the thesis does not give.

    Patches are sampled as nnU-Net's (``foreground_sampling``: see :func:`~monai_effseg.transforms.nnunet_augmentation`).
    ``prior_key`` (the cascade's stage-1 segmentation) is cropped, rotated (nearest) and mirrored with the label and
    finally appended to the image as a second channel, exactly as the inferer stacks it. ``tumour_paste_prob``: as
    :func:`~monai_effseg.transforms.nnunet_augmentation`'s (the prior is left as it was: a stage-1 prediction does not
    know of the pasted tumour either).
    """
    dims = len(patch_size)
    labels = [label_key] + ([prior_key] if prior_key else [])
    keys = [image_key, *labels]
    crop = augmentation_crop_size(patch_size, rotate_degrees, scale_range)
    xforms: list[mt.Transform] = tumour_paste(image_key, label_key, tumour_paste_prob)
    xforms += [
        mt.SpatialPadd(keys, spatial_size=crop),
        foreground_crop(keys, label_key, crop, foreground_fraction, foreground_sampling, final_size=patch_size),
        mt.RandAffined(
            keys,
            spatial_size=list(patch_size),
            prob=spatial_prob,
            rotate_range=[math.radians(rotate_degrees)] * (3 if dims == 3 else 1),
            scale_range=[(scale_range[0] - 1, scale_range[1] - 1)] * dims,
            mode=["bilinear"] + ["nearest"] * len(labels),
            padding_mode="zeros",
            cache_grid=True,
        ),
        mt.RandAdjustContrastd(image_key, gamma=gamma_range, prob=gamma_prob, retain_stats=True),
    ]
    xforms += [mt.RandFlipd(keys, prob=mirror_prob, spatial_axis=axis) for axis in mirror_axes if axis < dims]
    if prior_key:
        xforms += [mt.ConcatItemsd([image_key, prior_key], image_key), mt.DeleteItemsd(prior_key)]
    return xforms
