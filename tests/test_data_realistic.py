"""The realistic KiTS dataset: real KiTS19 label maps, augmented, with CT-like intensities around them; deterministic,
in KiTS19's layout and geometry, with a manifest whose tumour contrast matches the image."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_effseg.data import build_datalist, detect_layout, validate_case
from monai_effseg.data import realistic as realistic_module
from monai_effseg.data.realistic import MANIFEST, find_label_maps, realistic_kits_dataset

SPACING = (4.0, 2.5, 2.5)  # (z, y, x) mm: coarse enough for a fast suite, fine enough to resolve the cortex
NUM_CASES = 12


def _arrays(item) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    image = nib.load(item["image"])
    return np.asarray(image.dataobj), np.asarray(nib.load(item["label"]).dataobj), image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = realistic_kits_dataset(num_cases=NUM_CASES, root=tmp_path_factory.mktemp("real"), seed=1, spacing=SPACING)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    return root, build_datalist(root), {case["case_id"]: case for case in manifest["cases"]}


def test_layout_geometry_and_labels_follow_kits19(dataset, test_data):
    root, items, cases = dataset
    assert root.name.startswith(f"kits_real-v{realistic_module.REALISTIC_VERSION}-") and detect_layout(root) == "kits19"
    assert [item["case_id"] for item in items] == [f"case_{i:05d}" for i in range(NUM_CASES)]
    source_codes = nib.aff2axcodes(nib.load(test_data / "kits19_labels" / "case_00011.nii.gz").affine)
    for item in items:
        image, label, nifti = _arrays(item)
        assert nib.aff2axcodes(nifti.affine) == source_codes == ("I", "P", "L")
        np.testing.assert_allclose(nifti.header.get_zooms(), SPACING)
        np.testing.assert_array_equal(nifti.affine, nib.load(item["label"]).affine)
        assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == label.shape
        assert set(np.unique(label)) == {0, 1, 2}
        assert list(image.shape) == cases[item["case_id"]]["shape_zyx"]
        assert validate_case(item, num_classes=3) == []


def test_kidney_volume_follows_the_drawn_scale(dataset, test_data):
    _, items, cases = dataset
    for item in items:
        case = cases[item["case_id"]]
        _, label, _ = _arrays(item)
        kidney_ml = np.count_nonzero(label) * np.prod(SPACING) / 1000.0
        assert kidney_ml == pytest.approx(case["kidney_ml"], abs=0.01)
        scale = float(np.prod(case["scale"]))
        assert (0.9 * 0.97) ** 3 <= scale <= (1.1 * 1.03) ** 3
        assert 0.85 <= kidney_ml / (case["source_kidney_ml"] * scale) <= 1.15, item["case_id"]
    source = nib.load(test_data / "kits19_labels" / "case_00011.nii.gz")
    source_ml = np.count_nonzero(np.asanyarray(source.dataobj)) * np.prod(source.header.get_zooms()) / 1000.0
    assert cases["case_00005"]["source"] == "case_00011"
    assert cases["case_00005"]["source_kidney_ml"] == pytest.approx(source_ml, abs=0.01)


def test_more_than_ten_distinct_cases(dataset):
    _, items, cases = dataset
    assert cases["case_00010"]["source"] == cases["case_00000"]["source"] == "case_00000"
    assert cases["case_00010"]["scale"] != cases["case_00000"]["scale"]
    digests = {hash(_arrays(item)[1].tobytes()) for item in items} | {
        hash(_arrays(item)[0].tobytes()) for item in items
    }
    assert len(digests) == 2 * NUM_CASES


def test_generation_is_deterministic_and_per_case(dataset, tmp_path):
    _, items, cases = dataset
    again = realistic_kits_dataset(num_cases=2, root=tmp_path / "a", seed=1, spacing=SPACING)
    other = realistic_kits_dataset(num_cases=1, root=tmp_path / "b", seed=2, spacing=SPACING)
    again_cases = json.loads((again / MANIFEST).read_text(encoding="utf-8"))["cases"]
    for index, item in enumerate(build_datalist(again)):
        left, right = _arrays(items[index]), _arrays(item)
        np.testing.assert_array_equal(left[0], right[0])
        np.testing.assert_array_equal(left[1], right[1])
        np.testing.assert_array_equal(left[2].affine, right[2].affine)
        assert again_cases[index] == cases[item["case_id"]]
    assert not np.array_equal(_arrays(items[0])[0], _arrays(build_datalist(other)[0])[0])


def test_intensities_are_ct_like(dataset):
    _, items, _ = dataset
    for item in items:
        image, label, _ = _arrays(item)
        corners = image[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # in-plane corners of every slice: air around the body
        assert -1020 < corners.mean() < -980
        assert image.max() > 300  # bone
        assert np.mean((image > -150) & (image < -50)) > 0.05  # fat
        assert 20 < image[label == 1].mean() < 230


def test_cortex_is_brighter_than_medulla(dataset):
    _, items, cases = dataset
    for item in items:
        case = cases[item["case_id"]]
        image, label, _ = _arrays(item)
        depth = ndimage.distance_transform_edt(np.pad(label > 0, 1), sampling=SPACING)[1:-1, 1:-1, 1:-1]
        rim = (label == 1) & (depth <= 2.5)  # the outermost in-plane voxel: cortex
        core = (label == 1) & (depth > case["cortex_mm"] + 2.5)
        gap = case["hu"]["kidney_cortex"] - case["hu"]["kidney_medulla"]
        assert image[rim].mean() - image[core].mean() > 0.3 * gap, item["case_id"]


def test_tumour_contrast_in_the_manifest_matches_the_image(dataset):
    _, items, cases = dataset
    contrasts = []
    for item in items:
        case = cases[item["case_id"]]
        image, label, _ = _arrays(item)
        measured = image[label == 1].mean() - image[label == 2].mean()
        tolerance = 5.0 + 0.1 * abs(case["tumour_contrast_hu"]) + 100.0 / np.sqrt(np.count_nonzero(label == 2))
        assert abs(measured - case["tumour_contrast_hu"]) < tolerance, (item["case_id"], measured, case)
        contrasts.append(abs(case["tumour_contrast_hu"]))
    # From subtle to clear: 12 log-uniform draws in 10-110 HU all miss < 25 HU (or > 45 HU) with p < 0.5 %.
    assert min(contrasts) < 25.0 and max(contrasts) > 45.0


def test_generation_time_of_a_default_case_is_bounded(tmp_path):
    start = time.perf_counter()
    root = realistic_kits_dataset(num_cases=1, root=tmp_path, seed=5)  # default spacing: 2.2-2.8 mm, 2.5-5 mm slices
    assert time.perf_counter() - start < 20.0
    case = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["cases"][0]
    assert 2.2 <= case["spacing_zyx"][1] == case["spacing_zyx"][2] <= 2.8
    assert case["spacing_zyx"][0] in (2.5, 3.0, 4.0, 5.0) and case["spacing_zyx"][0] >= case["source_spacing_zyx"][0]


def test_source_spacing_and_a_kits19_data_folder(tmp_path, test_data):
    data = tmp_path / "kits19" / "data" / "case_00011"
    data.mkdir(parents=True)
    (data / "segmentation.nii.gz").symlink_to(test_data / "kits19_labels" / "case_00011.nii.gz")
    assert find_label_maps(data.parent) == [data / "segmentation.nii.gz"]
    root = realistic_kits_dataset(num_cases=1, root=tmp_path, labels_dir=data.parent, spacing="source", elastic_mm=0.0)
    image = nib.load(build_datalist(root)[0]["image"])
    np.testing.assert_allclose(image.header.get_zooms(), (5.0, 0.703125, 0.703125))
    assert nib.aff2axcodes(image.affine) == ("I", "P", "L")


def test_missing_labels_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.delenv(realistic_module.LABELS_ENV, raising=False)
    monkeypatch.setattr(realistic_module, "_REPO_LABELS", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="labels_dir=.*EFFSEG_KITS19_LABELS"):
        realistic_kits_dataset(num_cases=1, root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no KiTS19 label maps"):
        realistic_kits_dataset(num_cases=1, root=tmp_path, labels_dir=tmp_path)


def test_realistic_demo_holds_out_whole_patients(monkeypatch, tmp_path):
    from monai_effseg.data import demo_dataset
    from monai_effseg.data.demo import REALISTIC_HOLDOUT_SOURCES

    monkeypatch.setenv("EFFSEG_CACHE", str(tmp_path))
    sources = {}
    for part, n in (("training", 8), ("holdout", 3)):
        root = demo_dataset("realistic", part, n)
        assert root.parent.parent == tmp_path
        cases = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["cases"]
        sources[part] = {case["source"] for case in cases}
        assert len(build_datalist(root)) == n
    assert sources["holdout"] == set(REALISTIC_HOLDOUT_SOURCES)
    assert len(sources["training"]) == 7 and not sources["training"] & sources["holdout"]
    with pytest.raises(ValueError, match="no liver"):
        demo_dataset("realistic", "training", 2, phantoms="lits")
    with pytest.raises(FileNotFoundError, match="case_99999"):
        realistic_kits_dataset(num_cases=1, root=tmp_path, sources=["case_99999"])
