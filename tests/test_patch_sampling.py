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
