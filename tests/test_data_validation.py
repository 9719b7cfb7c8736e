"""Bad input: every unusable file gets a clear problem naming it, and a dataset reports all of them at once."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_effseg.data import (
    DataValidationError,
    build_datalist,
    compute_fingerprint,
    validate_case,
    validate_datalist,
    validate_image,
)

SHAPE = (12, 10, 6)


def _ct(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full(SHAPE, -1000.0, dtype=np.float32)
    image[2:-2, 2:-2, :] = 40.0
    image[4:8, 4:7, 1:5] = 150.0
    return (image + rng.normal(0, 5, SHAPE)).astype(np.float32)


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[4:8, 4:7, 1:5] = 1
    label[5:6, 5:6, 2:3] = 2
    return label


def _save(path: Path, array: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def _pair(tmp_path: Path, name: str, image=None, label=None, image_affine=None, label_affine=None) -> dict:
    return {
        "image": str(_save(tmp_path / f"{name}_img.nii.gz", _ct() if image is None else image, image_affine)),
        "label": str(_save(tmp_path / f"{name}_seg.nii.gz", _label() if label is None else label, label_affine)),
        "case_id": name,
    }


def _only_problem(problems: list[str], path: str, *words: str) -> str:
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:"), problems
    for word in words:
        assert word in problems[0], problems
    return problems[0]


def test_good_case_has_no_problem(tmp_path):
    assert validate_case(_pair(tmp_path, "good"), num_classes=3) == []


def test_real_ct_and_masks_pass(test_data):
    data = test_data / "abdomen_ct_3mm"
    item = {"image": str(data / "ct.nii.gz"), "label": str(data / "liver.nii.gz"), "case_id": "abdomen"}
    assert validate_case(item, num_classes=2) == []


def test_truncated_real_nifti(tmp_path, test_data):
    raw = (test_data / "abdomen_ct_3mm" / "ct.nii.gz").read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    _only_problem(validate_image(truncated), str(truncated), "unreadable", "truncated")


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    _only_problem(validate_image(empty), str(empty), "empty file")
    missing = tmp_path / "missing.nii.gz"
    _only_problem(validate_image(missing), str(missing), "does not exist")


def test_not_a_nifti(tmp_path):
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"this is not an image" * 40)
    _only_problem(validate_image(garbage), str(garbage), "unreadable")


@pytest.mark.parametrize("value, counts", [(np.nan, "3 NaN, 0 inf"), (np.inf, "0 NaN, 3 inf")])
def test_non_finite_values(tmp_path, value, counts):
    image = _ct()
    image[0, 0, :3] = value
    path = _save(tmp_path / "nonfinite.nii.gz", image)
    _only_problem(validate_image(path), str(path), "non-finite", counts)


@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 1), (12, 1, 6)])
def test_2d_image(tmp_path, shape):
    path = _save(tmp_path / "flat.nii.gz", np.full(shape, 40.0, np.float32))
    _only_problem(validate_image(path), str(path), "2D image", str(shape))


def test_4d_series(tmp_path):
    path = _save(tmp_path / "series.nii.gz", np.stack([_ct(), _ct(1)], axis=-1))
    _only_problem(validate_image(path), str(path), "4D image", "single 3D volume")
    single_frame = _save(tmp_path / "frame.nii.gz", _ct()[..., None])
    assert validate_image(single_frame) == []


@pytest.mark.parametrize(
    "transform, words",
    [
        (lambda x: (x + 1000) / 1300.0, ("max <= 1", "normalised")),
        (lambda x: (x + 300) / 100.0, ("spans less than 100",)),
        (lambda x: x + 1024, ("no negative value",)),
        (lambda x: np.where(x < -900, -32768, x), ("below -3072",)),
        (lambda x: np.where(x > 100, 40000, x), ("exceeds 32767",)),
    ],
    ids=["minmax", "zscore", "no-intercept", "padding", "too-bright"],
)
def test_intensity_range_not_ct(tmp_path, transform, words):
    path = _save(tmp_path / "odd.nii.gz", transform(_ct()).astype(np.float32))
    _only_problem(validate_image(path), str(path), *words)


def test_label_outside_class_range(tmp_path):
    label = _label()
    label[0, 0, 0] = 7
    item = _pair(tmp_path, "seven", label=label)
    _only_problem(validate_case(item, num_classes=3), item["label"], "label values [7]", "0..2")
    assert validate_case(item, num_classes=None) == []  # only non-negative integers are required then


def test_non_integer_label(tmp_path):
    label = _label().astype(np.float32)
    label[0, 0, 0] = 0.5
    item = _pair(tmp_path, "half", label=label)
    _only_problem(validate_case(item, num_classes=3), item["label"], "non-integer")


def test_mismatched_shape(tmp_path):
    item = _pair(tmp_path, "shape", label=_label()[:, :, :5])
    _only_problem(validate_case(item, 3), item["label"], "shape (12, 10, 5)", item["image"], "(12, 10, 6)")


def test_mismatched_affine(tmp_path):
    shifted = np.diag([0.8, 0.8, 3.0, 1.0])
    shifted[2, 3] = 3.0  # one slice off
    item = _pair(tmp_path, "affine", label_affine=shifted)
    _only_problem(validate_case(item, 3), item["label"], "affine differs", item["image"])
    flipped = np.diag([-0.8, 0.8, 3.0, 1.0])
    item = _pair(tmp_path, "flip", label_affine=flipped)
    _only_problem(validate_case(item, 3), item["label"], "affine differs")
    # float32 header rounding is far below the tolerance
    nearly = np.diag([0.8 + 1e-6, 0.8, 3.0, 1.0])
    assert validate_case(_pair(tmp_path, "near", label_affine=nearly), 3) == []


def test_dataset_reports_every_bad_file_in_one_error(tmp_path):
    (tmp_path / "empty_img.nii.gz").write_bytes(b"")
    nan_image = _ct()
    nan_image[1, 1, 1] = np.nan
    bad_label = _label()
    bad_label[0, 0, 0] = 9
    items = [
        _pair(tmp_path, "good"),
        _pair(tmp_path, "nan", image=nan_image),
        _pair(tmp_path, "label9", label=bad_label),
        {"image": str(tmp_path / "empty_img.nii.gz"), "label": str(tmp_path / "good_seg.nii.gz"), "case_id": "e"},
    ]
    with pytest.raises(DataValidationError) as err:
        validate_datalist(items, num_classes=3)
    assert len(err.value.problems) == 3
    message = str(err.value)
    for path in (items[1]["image"], items[2]["label"], items[3]["image"]):
        assert path in message
    assert items[0]["image"] not in message
    # The fingerprint validates too, before computing anything.
    with pytest.raises(DataValidationError) as err:
        compute_fingerprint(items, num_classes=3)
    assert len(err.value.problems) == 3


def test_bad_case_in_a_kits_layout_is_named_before_training(tmp_path):
    for i in range(2):
        case = tmp_path / f"case_{i:05d}"
        case.mkdir()
        _save(case / "imaging.nii.gz", _ct(i))
        _save(case / "segmentation.nii.gz", _label())
    raw = (tmp_path / "case_00001/imaging.nii.gz").read_bytes()
    (tmp_path / "case_00001/imaging.nii.gz").write_bytes(raw[:-40])
    with pytest.raises(DataValidationError, match="case_00001/imaging.nii.gz: unreadable"):
        compute_fingerprint(build_datalist(tmp_path), num_classes=3)
