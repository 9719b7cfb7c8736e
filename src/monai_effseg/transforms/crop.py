"""Training patch sampling with nnU-Net's class-aware foreground oversampling.

nnU-Net (Isensee et al. 2021; ``nnUNetDataLoader.get_bbox`` in v2) centres a fixed share of the patches (1/3) on a
foreground voxel of a *class* drawn uniformly among the foreground classes present in the case, and places the
others anywhere. MONAI's ``RandCropByPosNegLabeld`` draws the forced centre among all foreground voxels, so a KiTS
tumour that is 3 % of the kidney region gets about 3 % of the forced patches instead of half of them; its
``RandCropByLabelClassesd`` takes fixed class ratios and fails on a case that has none of the classes asked for.
:class:`ForegroundOversampledCropd` does what nnU-Net does; ``foreground_crop`` also builds the per-voxel
sampling, to compare the two (``benchmarks/bench_real_anatomy.py --sampling per_voxel``).

The crop is larger than the training patch (the spatial augmentation then samples the patch from its centre), and
nnU-Net lets that larger crop run past the volume's border by half the difference (``need_to_pad`` in its data
loader), padding the outside, so that the *final* patch reaches every voxel of the volume. Confining the larger crop
to the volume instead, as MONAI's croppers do, means a band of half that difference along every border is never
at a patch's centre and rarely in a patch at all: at the realistic demo's size (64 x 64 x 32 patch, 125 x 125 x 63
crop, 139 voxels front to back) the first and last 30 voxels (75 mm: the anterior abdominal wall) were almost never trained
on, and a network trained that way labelled the wall as tumour. ``final_size`` gives nnU-Net's bounds.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection
from monai.transforms.utils import correct_crop_centers

__all__ = ["FOREGROUND_SAMPLINGS", "ForegroundOversampledCropd", "foreground_crop"]

FOREGROUND_SAMPLINGS = ("per_class", "per_voxel")


class ForegroundOversampledCropd(mt.Randomizable, mt.MapTransform):
    """Crop ``spatial_size`` from every key: with probability ``foreground_fraction`` centred on a voxel of one
    foreground class, drawn uniformly among the classes present in ``label_key`` (nnU-Net's oversampling), else
    centred anywhere (also when the label has no foreground). Centres are moved inwards where the crop (with
    ``final_size``: the final patch at its centre) would leave the volume; without ``final_size``, dimensions smaller
    than ``spatial_size`` are kept whole (pad first for a fixed output size).

    Args:
        keys: the keys to crop (image, label and any prior channels).
        label_key: the integer label map (channel first) that the foreground centres are drawn from.
        spatial_size: the crop.
        foreground_fraction: share of the patches forced onto foreground (nnU-Net: 1/3).
        final_size: the training patch that a later spatial augmentation samples from the crop's centre. When given,
            the crop may run past the volume's border by ``(spatial_size - final_size) // 2`` (filled with zeros), so
            the final patch reaches the border, as in nnU-Net; the output is always ``spatial_size``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        spatial_size: Sequence[int],
        foreground_fraction: float = 1 / 3,
        final_size: Optional[Sequence[int]] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        mt.MapTransform.__init__(self, keys, allow_missing_keys)
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must lie in [0, 1], got {foreground_fraction}")
        self.label_key = label_key
        self.spatial_size = [int(s) for s in spatial_size]
        self.foreground_fraction = float(foreground_fraction)
        self.final_size = (
            None if final_size is None else [min(int(f), s) for f, s in zip(final_size, self.spatial_size)]
        )

    def randomize(self, label: np.ndarray) -> list[int]:
        shape = label.shape
        if self.R.rand() < self.foreground_fraction:
            counts = np.bincount(label.ravel())
            present = np.flatnonzero(counts[1:]) + 1
            if present.size:
                cls = present[self.R.randint(present.size)]
                index = np.flatnonzero(label.ravel() == cls)[self.R.randint(counts[cls])]
                return [int(i) for i in np.unravel_index(index, shape)]
        return [int(self.R.randint(s)) for s in shape]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = d[self.label_key]
        label = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        spatial = label[0].astype(np.int64, copy=False)
        centre = self.randomize(spatial)
        if self.final_size is None:
            centre = correct_crop_centers(centre, self.spatial_size, spatial.shape, allow_smaller=True)
            cropper = mt.SpatialCrop(roi_center=[int(c) for c in centre], roi_size=self.spatial_size)
            for key in self.key_iterator(d):
                d[key] = cropper(d[key])
            return d
        centre = correct_crop_centers(centre, self.final_size, spatial.shape, allow_smaller=True)
        start = [int(c) - s // 2 for c, s in zip(centre, self.spatial_size)]
        lo = [max(b, 0) for b in start]
        hi = [min(b + s, n) for b, s, n in zip(start, self.spatial_size, spatial.shape)]
        border = [p for b, s, l_, h in zip(start, self.spatial_size, lo, hi) for p in (l_ - b, b + s - h)]
        cropper, padder = mt.SpatialCrop(roi_start=lo, roi_end=hi), mt.BorderPad(spatial_border=border)
        for key in self.key_iterator(d):
            d[key] = padder(cropper(d[key]))
        return d


def foreground_crop(
    keys: KeysCollection,
    label_key: str,
    spatial_size: Sequence[int],
    foreground_fraction: float = 1 / 3,
    sampling: str = "per_class",
    final_size: Optional[Sequence[int]] = None,
) -> mt.Transform:
    """The training crop: ``"per_class"`` (:class:`ForegroundOversampledCropd`, nnU-Net's) or ``"per_voxel"``
    (MONAI's ``RandCropByPosNegLabeld``: forced centres on any foreground voxel, the others on background), with
    ``final_size`` the crop may run past the border so that the final patch reaches it (see the module)."""
    if sampling == "per_class":
        return ForegroundOversampledCropd(keys, label_key, spatial_size, foreground_fraction, final_size)
    if sampling == "per_voxel":
        crop = mt.RandCropByPosNegLabeld(keys, label_key=label_key, spatial_size=list(spatial_size),
                                         pos=foreground_fraction, neg=1.0 - foreground_fraction, num_samples=1,
                                         allow_smaller=True)  # fmt: skip
        if final_size is None:
            return crop
        margin = [max(int(s) - int(f), 0) // 2 for s, f in zip(spatial_size, final_size)]
        return mt.Compose([mt.BorderPadd(keys, spatial_border=margin), crop])
    raise ValueError(f"foreground sampling must be one of {FOREGROUND_SAMPLINGS}, got {sampling!r}")
