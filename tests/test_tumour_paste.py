"""TumorCP copy-paste (issue 30): tumours of earlier training cases pasted into this case's organ, never its own,
never changing the cached case, exactly the source's voxels inside the tumour and a blended rim around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from scipy import ndimage

from monai_effseg.transforms import TumourCopyPasted, nnunet_augmentation
from monai_effseg.transforms.cascade import residual_unet_augmentation

SHAPE = (40, 36, 20)
ORGAN = (slice(8, 32), slice(8, 28), slice(4, 16))


def _case(name: str, tumour: tuple[slice, ...] | None, level: float = 0.0) -> dict:
    label = torch.zeros(1, *SHAPE, dtype=torch.uint8)
    label[(0, *ORGAN)] = 1
    if tumour is not None:
        label[(0, *tumour)] = 2
    # every voxel's value says which case and where it came from
    image = level + torch.arange(np.prod(SHAPE), dtype=torch.float32).reshape(1, *SHAPE) / 1e6
    meta = {"filename_or_obj": name}
    return {"image": MetaTensor(image, meta=dict(meta)), "label": MetaTensor(label, meta=dict(meta))}


TUMOUR = (slice(12, 17), slice(12, 16), slice(6, 9))  # 60 voxels


def test_a_tumour_of_another_case_lands_in_the_organ_with_its_own_voxels_inside():
    paste = TumourCopyPasted(prob=1.0, blend_sigma=1.0)
    paste.set_random_state(0)
    donor = _case("donor.nii.gz", TUMOUR, level=100.0)
    paste(donor)
    target = _case("target.nii.gz", None)
    before = {k: v.clone() for k, v in target.items()}
    out = paste(target)
    for key in before:  # the input (a cached case) is never changed
        assert torch.equal(target[key], before[key])
    tumour = out["label"][0] == 2
    assert 0 < int(tumour.sum()) <= 60
    # centred on the organ: the pasted tumour overlaps it
    organ = torch.zeros(SHAPE, dtype=torch.bool)
    organ[ORGAN] = True
    assert bool((tumour & organ).any())
    # inside the labelled tumour the image is the donor's (alpha 1); those values start at 100
    assert bool((out["image"][0][tumour] >= 100.0).all())
    # a blended rim around it: changed voxels outside the tumour, with values between the two cases'
    rim = (out["image"][0] != target["image"][0]) & ~tumour
    assert int(rim.sum()) > 0
    assert bool((out["image"][0][rim] < 100.0).all()) and bool((out["image"][0][rim] > 0.0).all())
    # nothing changes outside the pasted box (the tumour's box and a margin of 3 sigma)
    box = ndimage.binary_dilation(tumour.numpy(), structure=np.ones((3, 3, 3)), iterations=3)
    far = ~torch.from_numpy(box)
    assert torch.equal(out["image"][0][far], target["image"][0][far])
    assert torch.equal(out["label"][0][far], target["label"][0][far])


def test_a_case_never_receives_its_own_tumour_and_nothing_is_pasted_before_the_bank_has_another_case():
    paste = TumourCopyPasted(prob=1.0)
    paste.set_random_state(0)
    case = _case("a.nii.gz", TUMOUR)
    for _ in range(5):  # only its own tumour is banked: never pasted
        out = paste(case)
        assert int((out["label"] == 2).sum()) == 60
        assert torch.equal(out["image"], case["image"])
    out = paste(_case("b.nii.gz", None))
    assert int((out["label"] == 2).sum()) > 0


def test_prob_zero_is_the_identity_and_a_case_without_organ_is_left_alone():
    paste = TumourCopyPasted(prob=0.0)
    paste(_case("donor.nii.gz", TUMOUR))
    target = _case("t.nii.gz", None)
    out = paste(target)
    assert torch.equal(out["image"], target["image"]) and torch.equal(out["label"], target["label"])
    paste = TumourCopyPasted(prob=1.0)
    paste(_case("donor.nii.gz", TUMOUR))
    empty = _case("e.nii.gz", None)
    empty["label"].zero_()
    out = paste(empty)
    assert int(out["label"].sum()) == 0


def test_a_paste_at_the_volume_edge_is_clipped_and_the_hard_edge_option_copies_exactly():
    paste = TumourCopyPasted(prob=1.0, blend_sigma=0.0, mirror=False)
    paste(
        _case("donor.nii.gz", (slice(0, 30), slice(0, 30), slice(0, 14)), level=100.0)
    )  # a tumour bigger than the organ
    out = paste(_case("t.nii.gz", None))
    tumour = out["label"][0] == 2
    assert 0 < int(tumour.sum()) < 30 * 30 * 14
    changed = out["image"][0] >= 100.0
    assert torch.equal(changed, tumour)  # sigma 0: no rim, exactly the labelled voxels


def test_the_bank_keeps_the_latest_cases_within_its_voxel_budget_and_replaces_a_case_seen_again():
    paste = TumourCopyPasted(prob=0.0, blend_sigma=0.0, bank_voxels=150)
    for name in ("a", "b", "c"):
        paste(_case(name, TUMOUR))  # 60 voxels each (sigma 0: no margin)
    assert list(paste.bank) == ["b", "c"]
    paste(_case("b", TUMOUR))  # seen again: the most recent, not scanned again
    assert list(paste.bank) == ["c", "b"]
    tiny = TumourCopyPasted(prob=0.0, min_voxels=61)
    tiny(_case("a", TUMOUR))
    assert tiny.bank == {"a": []}


def test_the_same_seed_pastes_the_same_way():
    outs = []
    for _ in range(2):
        paste = TumourCopyPasted(prob=1.0)
        paste.set_random_state(7)
        paste(_case("donor.nii.gz", TUMOUR, level=100.0))
        outs.append(paste(_case("t.nii.gz", None))["label"])
    assert torch.equal(outs[0], outs[1])


def test_a_label_with_several_channels_is_refused():
    paste = TumourCopyPasted()
    case = _case("a", TUMOUR)
    case["label"] = MetaTensor(torch.zeros(2, *SHAPE))
    with pytest.raises(ValueError, match="one channel"):
        paste(case)


@pytest.mark.parametrize("build", [nnunet_augmentation, residual_unet_augmentation])
def test_bundle_augmentations_lead_with_the_paste_only_when_asked(build):
    assert not any(isinstance(t, TumourCopyPasted) for t in build((16, 16, 8)))
    xforms = build((16, 16, 8), tumour_paste_prob=0.5)
    assert isinstance(xforms[0], TumourCopyPasted) and xforms[0].prob == 0.5
    pipeline = Compose(xforms)
    pipeline.set_random_state(0)
    pipeline(_case("donor.nii.gz", TUMOUR))
    out = pipeline(_case("t.nii.gz", None))
    assert tuple(out["image"].shape[1:]) == (16, 16, 8) == tuple(out["label"].shape[1:])
