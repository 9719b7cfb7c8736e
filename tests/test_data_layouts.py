"""Dataset adapters: each published layout is detected and listed in a deterministic order; bad folders give one clear
error that names the folder and every expected layout."""

from __future__ import annotations

import json
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest

from monai_effseg.data import LAYOUTS, DatasetLayoutError, build_datalist, detect_layout


def _ct(shape=(8, 8, 4)) -> np.ndarray:
    image = np.full(shape, -1000, dtype=np.int16)
    image[2:-2, 2:-2, :] = 40
    return image


def _write(path: Path, array: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nrrd", ".mha")):
        itk.imwrite(itk.image_from_array(np.ascontiguousarray(array.T)), str(path))
    else:
        nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def _case(image: Path, label: Path | None) -> None:
    _write(image, _ct())
    if label is not None:
        _write(label, (_ct() > 0).astype(np.uint8))


def _check_layout_error(err: pytest.ExceptionInfo, folder: Path) -> None:
    message = str(err.value)
    assert str(folder) in message
    for name in LAYOUTS:
        assert name in message, f"{name} missing from: {message}"


def test_kits19_layout_skips_unlabelled_test_cases(tmp_path):
    for i in (2, 0, 1):
        _case(tmp_path / f"case_{i:05d}/imaging.nii.gz", tmp_path / f"case_{i:05d}/segmentation.nii.gz")
    _case(tmp_path / "case_00210/imaging.nii.gz", None)  # KiTS19 test case: imaging only
    assert detect_layout(tmp_path) == "kits19"
    items = build_datalist(tmp_path)
    assert [item["case_id"] for item in items] == ["case_00000", "case_00001", "case_00002"]
    assert items[1] == {
        "image": str(tmp_path / "case_00001/imaging.nii.gz"),
        "label": str(tmp_path / "case_00001/segmentation.nii.gz"),
        "case_id": "case_00001",
    }
    unlabelled = build_datalist(tmp_path, require_labels=False)
    assert [item["case_id"] for item in unlabelled][-1] == "case_00210"
    assert "label" not in unlabelled[-1]


def test_kits19_repository_root_with_data_folder(tmp_path):
    _case(tmp_path / "data/case_00007/imaging.nii.gz", tmp_path / "data/case_00007/segmentation.nii.gz")
    (tmp_path / "starter_code").mkdir()
    assert detect_layout(tmp_path) == "kits19"
    assert build_datalist(tmp_path, layout="kits19")[0]["case_id"] == "case_00007"


def test_kits21_and_kits23_layout(tmp_path):
    for i in range(2):
        case = tmp_path / "dataset" / f"case_{i:05d}"
        _case(case / "imaging.nii.gz", case / "aggregated_MAJ_seg.nii.gz")
        _write(case / "aggregated_OR_seg.nii.gz", np.zeros((8, 8, 4), np.uint8))
    assert detect_layout(tmp_path) == "kits21"
    items = build_datalist(tmp_path, layout="kits23")
    assert [Path(item["label"]).name for item in items] == ["aggregated_MAJ_seg.nii.gz"] * 2


def test_lits_layout_nested_batches_in_natural_order(tmp_path):
    _case(tmp_path / "Training Batch 1/volume-0.nii", tmp_path / "Training Batch 1/segmentation-0.nii")
    _case(tmp_path / "Training Batch 2/volume-10.nii.gz", tmp_path / "Training Batch 2/segmentation-10.nii.gz")
    _case(tmp_path / "Training Batch 1/volume-2.nii", tmp_path / "Training Batch 1/segmentation-2.nii")
    _case(tmp_path / "test/test-volume-3.nii", None)  # the challenge's test set is not training data
    assert detect_layout(tmp_path) == "lits"
    items = build_datalist(tmp_path)
    assert [item["case_id"] for item in items] == ["volume-0", "volume-2", "volume-10"]
    assert items[2]["label"].endswith("Training Batch 2/segmentation-10.nii.gz")


def test_lits_labels_in_a_parallel_folder(tmp_path):
    _case(tmp_path / "volumes/volume-1.nii", tmp_path / "segmentations/segmentation-1.nii")
    assert build_datalist(tmp_path, layout="lits")[0]["label"] == str(tmp_path / "segmentations/segmentation-1.nii")


def test_msd_layout(tmp_path):
    _case(tmp_path / "imagesTr/liver_3.nii.gz", tmp_path / "labelsTr/liver_3.nii.gz")
    _case(tmp_path / "imagesTr/liver_12.nii.gz", tmp_path / "labelsTr/liver_12.nii.gz")
    spec = {
        "name": "Liver",
        "training": [
            {"image": "./imagesTr/liver_12.nii.gz", "label": "./labelsTr/liver_12.nii.gz"},
            {"image": "./imagesTr/liver_3.nii.gz", "label": "./labelsTr/liver_3.nii.gz"},
        ],
        "test": ["./imagesTs/liver_200.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    assert detect_layout(tmp_path) == "msd"
    items = build_datalist(tmp_path)
    assert [item["case_id"] for item in items] == ["liver_3", "liver_12"]
    assert items[0]["image"] == str(tmp_path / "imagesTr/liver_3.nii.gz")


def test_nnunet_raw_v1_and_v2(tmp_path):
    v1 = tmp_path / "Task040_KiTS"
    _case(v1 / "imagesTr/case_00000_0000.nii.gz", v1 / "labelsTr/case_00000.nii.gz")
    spec = {"training": [{"image": "./imagesTr/case_00000.nii.gz", "label": "./labelsTr/case_00000.nii.gz"}]}
    (v1 / "dataset.json").write_text(json.dumps(spec))
    assert build_datalist(v1)[0]["image"] == str(v1 / "imagesTr/case_00000_0000.nii.gz")

    v2 = tmp_path / "Dataset064_KiTS"
    _case(v2 / "imagesTr/case_00001_0000.nii.gz", v2 / "labelsTr/case_00001.nii.gz")
    (v2 / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}))
    assert build_datalist(v2) == [
        {
            "image": str(v2 / "imagesTr/case_00001_0000.nii.gz"),
            "label": str(v2 / "labelsTr/case_00001.nii.gz"),
            "case_id": "case_00001",
        }
    ]


def test_folder_layout_mixed_formats(tmp_path):
    _case(tmp_path / "images/b.nrrd", tmp_path / "labels/b.nrrd")
    _case(tmp_path / "images/a.nii.gz", tmp_path / "labels/a.nii.gz")
    _case(tmp_path / "images/c.mha", tmp_path / "labels/c.nii")
    (tmp_path / "images/notes.txt").write_text("not an image")
    assert detect_layout(tmp_path) == "folder"
    items = build_datalist(tmp_path)
    assert [(item["case_id"], Path(item["label"]).name) for item in items] == [
        ("a", "a.nii.gz"),
        ("b", "b.nrrd"),
        ("c", "c.nii"),
    ]


def test_order_does_not_depend_on_the_file_system(tmp_path, monkeypatch):
    for i in (3, 11, 1, 20):
        _case(tmp_path / f"case_{i:05d}/imaging.nii.gz", tmp_path / f"case_{i:05d}/segmentation.nii.gz")
    forward = build_datalist(tmp_path)
    original = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(original(self), reverse=True)))
    assert build_datalist(tmp_path) == forward
    assert [item["case_id"] for item in forward] == ["case_00001", "case_00003", "case_00011", "case_00020"]


def test_missing_directory_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        build_datalist(missing)
    _check_layout_error(err, missing)
    assert isinstance(err.value, ValueError)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        build_datalist(missing, layout="kits19")


def test_empty_and_unrecognised_directory_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="is empty") as err:
        build_datalist(tmp_path)
    _check_layout_error(err, tmp_path)
    _write(tmp_path / "scan.nii.gz", _ct())
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetLayoutError, match="matches no known dataset layout") as err:
        build_datalist(tmp_path)
    _check_layout_error(err, tmp_path)


def test_explicit_layout_that_does_not_match(tmp_path):
    _case(tmp_path / "volume-0.nii", tmp_path / "segmentation-0.nii")
    with pytest.raises(DatasetLayoutError, match="'kits19'") as err:
        build_datalist(tmp_path, layout="kits19")
    _check_layout_error(err, tmp_path)
    with pytest.raises(DatasetLayoutError, match="unknown layout 'kits20'"):
        build_datalist(tmp_path, layout="kits20")


def test_cases_without_labels_are_named(tmp_path):
    _case(tmp_path / "case_00000/imaging.nii.gz", tmp_path / "case_00000/segmentation.nii.gz")
    _case(tmp_path / "case_00004/imaging.nii.gz", None)
    _case(tmp_path / "case_00009/imaging.nii.gz", None)
    with pytest.raises(DatasetLayoutError) as err:
        build_datalist(tmp_path)
    message = str(err.value)
    assert "2 case(s) have no label file" in message
    assert str(tmp_path / "case_00004/segmentation.nii.gz") in message
    assert str(tmp_path / "case_00009/segmentation.nii.gz") in message
    assert "case_00000" not in message


def test_msd_with_broken_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetLayoutError, match="dataset.json") as err:
        build_datalist(tmp_path)
    _check_layout_error(err, tmp_path)
