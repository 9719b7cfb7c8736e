"""Training patch sampling (issue 30): nnU-Net's class-aware foreground oversampling, so that a tumour that is a few
per cent of the foreground still gets half of the forced patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_effseg.transforms import ForegroundOversampledCropd, foreground_crop, nnunet_augmentation
from monai_effseg.transforms.cascade import residual_unet_augmentation

SHAPE = (80, 80, 40)
PATCH = (16, 16, 8)


def _case(tumour: bool = True) -> dict:
    label = np.zeros((1, *SHAPE), np.uint8)
    label[0, 10:70, 10:70, 5:35] = 1  # a kidney region of 108,000 voxels ...
    if tumour:
        label[0, 30:34, 30:34, 20:22] = 2  # ... holding a tumour of 32 (0.03 %)
    # the image encodes each voxel's position, so a crop of it says where the label's crop came from
    image = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(1, *SHAPE)
    return {"image": MetaTensor(torch.from_numpy(image)), "label": MetaTensor(torch.from_numpy(label))}


def _centre_classes(transform, n: int = 400, tumour: bool = True) -> np.ndarray:
    transform.set_random_state(0)
    case = _case(tumour)
    classes = []
    for _ in range(n):
        out = transform(case)
        out = out[0] if isinstance(out, list) else out
        classes.append(int(out["label"][0][tuple(s // 2 for s in PATCH)]))
    return np.array(classes)


def test_forced_patches_centre_on_each_present_class_equally():
    classes = _centre_classes(ForegroundOversampledCropd(["image", "label"], "label", PATCH, foreground_fraction=1.0))
    assert set(classes) == {1, 2}
    assert 0.4 < np.mean(classes == 2) < 0.6  # nnU-Net: the class first, uniformly; then a voxel of it


def test_per_voxel_sampling_starves_the_small_class():
    crop = foreground_crop(["image", "label"], "label", PATCH, foreground_fraction=1.0, sampling="per_voxel")
    classes = _centre_classes(crop)
    assert np.mean(classes == 2) < 0.02  # MONAI's RandCropByPosNegLabeld: tumour gets its 0.03 % voxel share


def test_unforced_patches_land_anywhere_and_a_case_without_foreground_still_crops():
    anywhere = ForegroundOversampledCropd(["image", "label"], "label", PATCH, foreground_fraction=0.0)
    classes = _centre_classes(anywhere)
    assert 0.1 < np.mean(classes == 0) < 0.9 and np.mean(classes == 1) > 0.1
    forced = ForegroundOversampledCropd(["image", "label"], "label", PATCH, foreground_fraction=1.0)
    assert set(_centre_classes(forced, n=20, tumour=False)) <= {0, 1}
    empty = {"image": torch.zeros(1, *SHAPE), "label": torch.zeros(1, *SHAPE, dtype=torch.uint8)}
    assert forced(empty)["label"].shape == (1, *PATCH)


def test_image_and_label_are_cropped_at_the_same_place():
    crop = ForegroundOversampledCropd(["image", "label"], "label", PATCH, foreground_fraction=1.0)
    crop.set_random_state(3)
    case = _case()
    full_label = case["label"][0].numpy()
    for _ in range(20):
        out = crop(case)
        assert out["image"].shape == out["label"].shape == (1, *PATCH)
        index = np.unravel_index(out["image"][0].numpy().astype(np.int64), SHAPE)
        np.testing.assert_array_equal(full_label[index], out["label"][0].numpy())


@pytest.mark.parametrize("build", [nnunet_augmentation, residual_unet_augmentation])
def test_bundle_augmentations_sample_per_class_by_default_and_keep_the_patch_size(build):
    transforms = build(list(PATCH))
    assert any(isinstance(t, ForegroundOversampledCropd) for t in transforms)
    pipeline = Compose(transforms)
    pipeline.set_random_state(0)
    out = pipeline(_case())
    assert out["image"].shape == out["label"].shape == (1, *PATCH)
    old = build(list(PATCH), foreground_sampling="per_voxel")
    assert not any(isinstance(t, ForegroundOversampledCropd) for t in old)
    with pytest.raises(ValueError, match="per_class"):
        build(list(PATCH), foreground_sampling="uniform")


def _final_patch_extent(transforms, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest volume index along each axis that any final patch held (the image encodes each
    voxel's position + 1; padding is 0)."""
    pipeline = Compose(transforms)
    pipeline.set_random_state(0)
    case = _case()
    case["image"] = case["image"] + 1
    lo, hi = np.array(SHAPE), np.zeros(3, int)
    for _ in range(n):
        out = pipeline(case)
        out = out[0] if isinstance(out, list) else out
        values = out["image"][0].numpy().astype(np.int64)
        index = np.array(np.unravel_index(values[values > 0] - 1, SHAPE))
        lo, hi = np.minimum(lo, index.min(axis=1)), np.maximum(hi, index.max(axis=1))
    return lo, hi


@pytest.mark.parametrize("sampling", ["per_class", "per_voxel"])
@pytest.mark.parametrize("build", [nnunet_augmentation, residual_unet_augmentation])
def test_final_patches_reach_every_border_of_the_volume_as_in_nnunet(build, sampling):
    """The enlarged crop may run past the border (nnU-Net's need_to_pad), so the final patch, cut from its centre,
    reaches the first and last voxel of every axis; confined to the volume, it never got within (crop - patch) / 2."""
    patch = (16, 16, 8)
    off = {"spatial_prob": 0.0, "gamma_prob": 0.0, "mirror_prob": 0.0}
    if build is nnunet_augmentation:
        off.update(elastic_prob=0.0, noise_prob=0.0, blur_prob=0.0, brightness_prob=0.0, contrast_prob=0.0)
    transforms = build(patch, foreground_sampling=sampling, **off)
    lo, hi = _final_patch_extent(transforms)
    np.testing.assert_array_equal(lo, [0, 0, 0])
    np.testing.assert_array_equal(hi, np.array(SHAPE) - 1)


def test_a_crop_past_the_border_keeps_image_and_label_together_and_pads_with_zeros():
    crop = ForegroundOversampledCropd(["image", "label"], "label", (40, 40, 20), 0.0, final_size=PATCH)
    crop.set_random_state(1)
    case = _case()
    case["image"] = case["image"] + 1
    full_label = case["label"][0].numpy()
    padded = 0
    for _ in range(30):
        out = crop(case)
        assert out["image"].shape == out["label"].shape == (1, 40, 40, 20)
        values = out["image"][0].numpy().astype(np.int64)
        inside = values > 0
        padded += int((~inside).sum())
        np.testing.assert_array_equal(out["label"][0].numpy()[~inside], 0)
        index = np.unravel_index(values[inside] - 1, SHAPE)
        np.testing.assert_array_equal(full_label[index], out["label"][0].numpy()[inside])
        # the final patch at the crop's centre always lies inside the volume
        centre = tuple(slice((c - p) // 2, (c - p) // 2 + p) for c, p in zip((40, 40, 20), PATCH))
        assert inside[centre].all()
    assert padded > 0
