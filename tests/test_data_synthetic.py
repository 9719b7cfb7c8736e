"""Synthetic phantoms: deterministic, cached atomically, in the real layouts and orientations, anatomically sane."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage, Orientation
from scipy import ndimage

from monai_effseg.data import build_datalist, detect_layout, synthetic_dataset, validate_case
from monai_effseg.data import synthetic as synthetic_module
from monai_effseg.data.phantoms import make_phantom

SMALL = (48, 48, 24)


def _load_ras(path: str) -> tuple[np.ndarray, np.ndarray]:
    image = Orientation("RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(
        LoadImage(image_only=True, ensure_channel_first=True)(path)
    )
    return image[0].numpy(), image.affine.numpy()


def test_kits_dataset_layout_orientation_and_geometry(tmp_path):
    root = synthetic_dataset("kits", num_cases=4, root=tmp_path, shape=SMALL)
    assert root.parent == tmp_path / "synthetic" and root.name.startswith("kits-v")
    assert detect_layout(root) == "kits19"
    items = build_datalist(root)
    assert [item["case_id"] for item in items] == [f"case_{i:05d}" for i in range(4)]
    codes = []
    for item in items:
        image, label = nib.load(item["image"]), nib.load(item["label"])
        assert image.shape == label.shape
        np.testing.assert_array_equal(image.affine, label.affine)
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        codes.append("".join(nib.aff2axcodes(image.affine)))
        zooms = sorted(image.header.get_zooms())
        assert zooms[2] > 1.05 * zooms[0]  # anisotropic: thick slices
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2}
        assert validate_case(item, num_classes=3) == []
    assert codes == ["IPL", "RAS", "LPS", "IPL"]
    first = nib.load(items[0]["image"])
    assert first.shape[0] < first.shape[1] == first.shape[2] == 48  # KiTS19-style (z, y, x) array


def test_generation_is_deterministic_and_per_case(tmp_path):
    a = synthetic_dataset("lits", num_cases=2, root=tmp_path / "a", shape=SMALL, seed=3)
    b = synthetic_dataset("lits", num_cases=3, root=tmp_path / "b", shape=SMALL, seed=3)
    c = synthetic_dataset("lits", num_cases=2, root=tmp_path / "c", shape=SMALL, seed=4)
    for name in ("volume-0.nii.gz", "segmentation-1.nii.gz"):
        left, right = nib.load(a / name), nib.load(b / name)
        np.testing.assert_array_equal(np.asarray(left.dataobj), np.asarray(right.dataobj))
        np.testing.assert_array_equal(left.affine, right.affine)
    assert not np.array_equal(
        np.asarray(nib.load(a / "volume-0.nii.gz").dataobj), np.asarray(nib.load(c / "volume-0.nii.gz").dataobj)
    )


def test_lits_layout_and_anatomy_in_world_coordinates(tmp_path):
    root = synthetic_dataset("lits", num_cases=3, root=tmp_path, shape=SMALL)
    assert detect_layout(root) == "lits"
    for item in build_datalist(root):
        image, _ = _load_ras(item["image"])
        label, affine = _load_ras(item["label"])
        liver_x = np.argwhere(label > 0)[:, 0].mean()
        # RAS: +x is the patient's right, where the liver is, whichever orientation the file was stored in
        assert liver_x > label.shape[0] / 2, item["case_id"]
        liver_hu = image[label == 1].mean()
        assert 50 < liver_hu < 130
        if (label == 2).any():
            assert image[label == 2].mean() < liver_hu - 30


def test_kits_contrast_and_attached_tumours():
    for case in range(4):
        phantom = make_phantom(np.random.default_rng([0, case]), "kits", shape=(64, 64, 32), cysts=True)
        image, label = phantom.image.astype(float), phantom.label
        kidney, tumour = label == 1, label == 2
        assert kidney.sum() > 500 and tumour.sum() > 30
        assert image[kidney].mean() > image[tumour].mean() + 40
        assert (ndimage.binary_dilation(tumour) & kidney).any()  # attached to a kidney
        assert image[0, 0, 0] < -900  # air outside the body
        assert kidney[:32].any() and kidney[32:].any()  # one kidney each side of the RAS x axis
        if (label == 3).any():
            assert image[label == 3].mean() < image[tumour].mean()


def test_lesion_sizes_include_small_ones():
    sizes = []
    for case in range(12):
        phantom = make_phantom(np.random.default_rng([7, case]), "lits", shape=(64, 64, 32))
        components, n = ndimage.label(phantom.label == 2)
        sizes += list(np.bincount(components.ravel())[1:])
    assert sizes and min(sizes) < 1000


def test_cysts_and_kits21_layout(tmp_path):
    root = synthetic_dataset("kits", num_cases=6, root=tmp_path, shape=SMALL, cysts=True, layout="kits21")
    assert detect_layout(root) == "kits21"
    labels = set()
    for item in build_datalist(root):
        labels |= set(np.unique(np.asarray(nib.load(item["label"]).dataobj)).tolist())
    assert labels == {0, 1, 2, 3}


def test_cache_is_reused_and_env_var_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFSEG_CACHE", str(tmp_path / "cache"))
    first = synthetic_dataset("kits", num_cases=1, shape=SMALL)
    assert first.is_relative_to(tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic_module, "make_phantom", fail)
    assert synthetic_dataset("kits", num_cases=1, shape=SMALL) == first
    with pytest.raises(AssertionError, match="regenerated"):
        synthetic_dataset("kits", num_cases=1, shape=SMALL, seed=1)
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # the failed run left no temporary folder


def test_concurrent_callers_get_one_complete_dataset(tmp_path, monkeypatch):
    results, errors = [], []
    barrier = threading.Barrier(3, timeout=60)
    generate = synthetic_module._generate

    def generate_then_wait(*args):
        generate(*args)
        barrier.wait()  # all three finish generating before any renames: two renames must collide

    monkeypatch.setattr(synthetic_module, "_generate", generate_then_wait)

    def build():
        try:
            results.append(synthetic_dataset("lits", num_cases=2, root=tmp_path, shape=SMALL))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert sorted(p.name for p in Path(results[0]).iterdir()) == [
        "segmentation-0.nii.gz",
        "segmentation-1.nii.gz",
        "synthetic.json",
        "volume-0.nii.gz",
        "volume-1.nii.gz",
    ]
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [results[0].name]


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        synthetic_dataset("brats")
    with pytest.raises(ValueError, match="cysts"):
        synthetic_dataset("lits", cysts=True)
    with pytest.raises(ValueError, match="layout"):
        synthetic_dataset("kits", layout="lits")
