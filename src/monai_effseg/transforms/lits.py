"""The LiTS pipeline of Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on 2D and 3D Deep Neural
Networks" (thesis, 2020), section 3.1, as MONAI transforms.

- :func:`lits_preprocessing`: load, reorient to RAS, clip HU to [-200, 200] and min-max to [0, 1] (section 3.1.1),
  resize in-plane to 256 x 256 (the 512 -> 256 of section 4.1.1), slices kept. ``Invertd`` undoes the geometry.
- Stage-specific training data: :class:`CombineLiverMaskd` (section 3.1.7, the ground-truth liver during training),
  :class:`StageLabeld` (liver = label >= 1, tumour = label 2).
- Slab sampling (section 3.1.2): :func:`lits_slab_sampling` crops ``in_slices`` whole axial slices around a centre
  slice drawn per class (``RandCropByLabelClassesd``), zero-padded at the volume's ends as the thesis does;
  :class:`SlabToChannelsd` turns them into the network's input (2.5D: slices as channels; the middle slice's label)
  or 3D slab (``(1, 8, H, W)``; the middle 4 slices' labels).
- :func:`lits_augmentation`: Table 3.1, in-plane, identical for every slice of a slab.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai import transforms as mt
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_effseg.encoders.lite import SLABS
from monai_effseg.nets.staged import stage_index
from monai_effseg.transforms.ct import RAS_LABELS, fixed_ct_normalize

__all__ = [
    "LITS_WINDOW",
    "CombineLiverMaskd",
    "SlabToChannelsd",
    "StageLabeld",
    "lits_augmentation",
    "lits_preprocessing",
    "lits_slab_sampling",
    "lits_train_transforms",
    "lits_validation_transforms",
    "stage_label",
]

LITS_WINDOW = (-200.0, 200.0)
"""Tustumi's HU window: "We clamp the HU values of the CT volumes to the [-200, 200] range" (section 3.1.1)."""


def lits_preprocessing(
    keys: Sequence[str] = ("image", "label"),
    image_size: Sequence[int] = (256, 256),
    image_only: bool = False,
    load: bool = True,
    window: Sequence[float] = LITS_WINDOW,
    allow_missing_keys: bool = False,
) -> mt.Compose:
    """Deterministic preprocessing: ``LoadImaged`` -> ``Orientationd("RAS")`` -> clip to ``window`` and min-max to
    [0, 1] -> ``Resized`` in-plane to ``image_size`` (anti-aliased linear for the image, nearest for labels; the slice
    count is kept) -> ``EnsureTyped``. Arrays come out ``(1, X, Y, Z)``, slices last."""
    keys = list(keys[:1] if image_only else keys)
    common = {"allow_missing_keys": allow_missing_keys}
    lo, hi = float(window[0]), float(window[1])
    modes = ["trilinear"] + ["nearest"] * (len(keys) - 1)
    xforms: list[Any] = []
    if load:
        xforms.append(mt.LoadImaged(keys, ensure_channel_first=True, image_only=True, **common))
    xforms += [
        mt.Orientationd(keys, axcodes="RAS", labels=RAS_LABELS, **common),
        fixed_ct_normalize(keys[0], lo, hi, lo, hi - lo, **common),
        mt.Resized(keys, spatial_size=(*image_size, -1), mode=modes, anti_aliasing=[True] + [False] * (len(keys) - 1),
                   **common),
        mt.EnsureTyped(keys, **common),
    ]  # fmt: skip
    return mt.Compose(xforms)


def stage_label(label: torch.Tensor, stage: int) -> torch.Tensor:
    """The binary target of a stage: stage 1 (liver) = label >= 1 (liver and tumour), stage 2 (tumour) = label == 2."""
    if stage_index(stage, 2) == 1:
        return (label >= 1).to(label.dtype)
    return (label == 2).to(label.dtype)


class StageLabeld(MapTransform):
    """Replace a 3-class LiTS label map (0 background, 1 liver, 2 tumour) by the binary target of ``stage``."""

    def __init__(self, keys: KeysCollection, stage: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stage = stage_index(stage, 2)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = stage_label(torch.as_tensor(d[key]), self.stage)
        return d


class CombineLiverMaskd(MapTransform):
    """Combine the image with the liver of ``label_key`` (label >= 1) by ``"mask"`` or ``"add"`` (section 3.1.7);
    the training-time input of the tumour stage. See :func:`monai_effseg.nets.combine_liver_mask`."""

    def __init__(self, keys: KeysCollection, label_key: str = "label", mode: str = "mask",
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        from monai_effseg.nets.lite_unet import COMBINE_MODES

        super().__init__(keys, allow_missing_keys)
        if mode not in COMBINE_MODES:
            raise ValueError(f"mode must be one of {COMBINE_MODES}, got {mode!r}")
        self.label_key = label_key
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai_effseg.nets.lite_unet import combine_liver_mask

        d = dict(data)
        liver = torch.as_tensor(d[self.label_key]) >= 1
        for key in self.key_iterator(d):
            d[key] = combine_liver_mask(d[key], liver, self.mode)
        return d


class SlabToChannelsd(MapTransform):
    """A cropped slab ``(1, X, Y, in_slices)`` (slices last) -> the network's layout.

    ``image_key``: the slices become channels, ``(in_slices, X, Y)``. ``label_key``: the middle ``out_slices`` slices,
    ``(out_slices, X, Y)``. With ``depth_first=True`` (3D networks) both get a channel axis in front of the slices:
    ``(1, in_slices, X, Y)`` and ``(1, out_slices, X, Y)``. Use ``depth_first=False`` until after the in-plane
    augmentation (a 2D transform on the slice channels, so every slice moves the same way), then a second instance
    with ``depth_first=True``: on ``(n, X, Y)`` tensors it only adds the channel axis. Outputs are plain tensors: the
    slab has no meaningful affine.
    """

    def __init__(self, image_key: str = "image", label_key: str | None = "label", out_slices: int = 1,
                 depth_first: bool = False) -> None:  # fmt: skip
        super().__init__([k for k in (image_key, label_key) if k is not None])
        self.image_key = image_key
        self.label_key = label_key
        self.out_slices = out_slices
        self.depth_first = depth_first

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key]).as_subclass(torch.Tensor)
        if image.dim() == 4:  # (1, X, Y, n): a cropped slab
            image = image[0].permute(2, 0, 1).contiguous()
        d[self.image_key] = image[None] if self.depth_first else image
        if self.label_key is not None and self.label_key in d:
            label = torch.as_tensor(d[self.label_key]).as_subclass(torch.Tensor)
            if label.dim() == 4:
                n = label.shape[-1]
                start = (n - self.out_slices) // 2
                label = label[0, :, :, start : start + self.out_slices].permute(2, 0, 1).contiguous()
            d[self.label_key] = label[None] if self.depth_first else label
        return d


def lits_slab_sampling(
    in_slices: int,
    out_slices: int,
    ratios: Sequence[float],
    num_samples: int = 4,
    keys: Sequence[str] = ("image", "label"),
) -> list[mt.Transform]:
    """Pad the volume's ends with ``in_slices // 2`` empty slices (section 3.1.2: "The edge cases are dealt with zero
    padding") and crop ``num_samples`` whole-slice slabs, the centre slice drawn by class with ``ratios``
    (background, liver, tumour), then :class:`SlabToChannelsd` (slices as channels)."""
    pad = in_slices // 2
    return [
        mt.BorderPadd(list(keys), spatial_border=[0, 0, 0, 0, pad, pad], mode="constant"),
        mt.RandCropByLabelClassesd(list(keys), label_key=keys[1], spatial_size=(-1, -1, in_slices),
                                   ratios=list(ratios), num_classes=3, num_samples=num_samples, warn=False),
        SlabToChannelsd(keys[0], keys[1], out_slices, depth_first=False),
    ]  # fmt: skip


def lits_augmentation(
    keys: Sequence[str] = ("image", "label"),
    image_size: int = 256,
    rotate_degrees: float = 15.0,
    shear_degrees: float = 10.0,
    translate_pixels: float = 16.0,
    scale: float = 0.125,
    noise_hu: float = 0.5,
    elastic_prob: float = 0.1,
    affine_prob: float = 1.0,
    flip_prob: float = 0.0,
    window: Sequence[float] = LITS_WINDOW,
) -> list[mt.Transform]:
    """Tustumi's Table 3.1, in-plane on ``(slices, X, Y)`` tensors: rotation +-15 deg, shear +-10 deg, translation
    +-16 px (at 256 px; scaled to ``image_size``), scaling +-12.5%, intensity noise, elastic deformation on 10%.

    The noise: Table 3.1 gives [-0.5, 0.5] and its caption "the range is less than 2HU"; in normalised units 0.5 would
    be 200 HU, so the range is read as +-0.5 HU, i.e. ``0.5 / 400`` after the [0, 1] min-max, applied as Gaussian noise
    of that standard deviation (MONAI has no uniform voxel noise). Flipping is listed in the text but not in
    Table 3.1, and "the model benefits from positional and structural information": ``flip_prob=0`` by default.
    """
    image = keys[0]
    px = translate_pixels * image_size / 256.0
    xforms: list[mt.Transform] = [
        mt.RandAffined(
            list(keys),
            prob=affine_prob,
            rotate_range=math.radians(rotate_degrees),
            shear_range=[math.tan(math.radians(shear_degrees))] * 2,
            translate_range=[px, px],
            scale_range=[scale, scale],
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        mt.Rand2DElasticd(
            list(keys),
            spacing=max(8, image_size // 8),
            magnitude_range=(1.0, 2.0),
            prob=elastic_prob,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        mt.RandGaussianNoised(image, prob=1.0 if noise_hu > 0 else 0.0, std=noise_hu / (window[1] - window[0])),
    ]
    if flip_prob > 0:
        xforms += [mt.RandFlipd(list(keys), prob=flip_prob, spatial_axis=axis) for axis in (0, 1)]
    return xforms


def lits_train_transforms(
    stage: int,
    spatial_dims: int,
    image_size: int = 256,
    in_slices: int | None = None,
    out_slices: int | None = None,
    ratios: Sequence[float] | None = None,
    num_samples: int = 4,
    combine: str = "mask",
    augmentation: Mapping[str, Any] | None = None,
    keys: Sequence[str] = ("image", "label"),
) -> list[mt.Transform]:
    """The random part of a stage's training pipeline (after :func:`lits_preprocessing`, which is cached):
    [tumour stage: combine with the ground-truth liver] -> slab sampling -> Table 3.1 augmentation -> [3D: slab
    layout] -> the stage's binary label.

    Args:
        stage: 1 (liver) or 2 (tumour).
        spatial_dims: 2 (2.5D: 9 slices in, 1 out) or 3 (8 in, 4 out).
        ratios: centre-slice class ratios (background, liver, tumour); default (1, 1, 1) for the liver stage (any
            slice, liver and tumour slices equally often) and (0, 1, 2) for the tumour stage (liver slices only,
            tumour slices twice as often: outside the liver the masked input is empty).
        augmentation: keyword arguments of :func:`lits_augmentation`.
    """
    in_slices = in_slices or SLABS[spatial_dims].in_slices
    out_slices = out_slices or SLABS[spatial_dims].out_slices
    tumour = stage_index(stage, 2) == 2
    if ratios is None:
        ratios = (0, 1, 2) if tumour else (1, 1, 1)
    xforms: list[mt.Transform] = [CombineLiverMaskd(keys[0], keys[1], combine)] if tumour else []
    xforms += lits_slab_sampling(in_slices, out_slices, ratios, num_samples, keys)
    xforms += lits_augmentation(keys, image_size, **dict(augmentation or {}))
    if spatial_dims == 3:
        xforms.append(SlabToChannelsd(keys[0], keys[1], out_slices, depth_first=True))
    xforms.append(StageLabeld(keys[1], stage))
    return xforms


def lits_validation_transforms(stage: int, combine: str = "mask", keys: Sequence[str] = ("image", "label")) -> list:
    """Whole-volume validation of stage 1 (liver) or 2 (tumour) (after :func:`lits_preprocessing`): the tumour stage
    sees the image combined with the ground-truth liver, as in training; the label becomes the stage's binary
    target."""
    tumour = stage_index(stage, 2) == 2
    xforms: list[mt.Transform] = [CombineLiverMaskd(keys[0], keys[1], combine)] if tumour else []
    return xforms + [StageLabeld(keys[1], stage)]
