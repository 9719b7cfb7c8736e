"""Dataset fingerprint: exact values on hand-built cases stored in different orientations, caching, and defaults."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from monai_effseg.data import (
    DEFAULT_FINGERPRINTS,
    compute_fingerprint,
    intensity_normalization,
    load_fingerprint,
    load_or_compute_fingerprint,
)
from monai_effseg.data import fingerprint as fingerprint_module


def _store(tmp_path, name, image_ras, label_ras, spacing_ras, axcodes):
    """Saves RAS arrays with the array axes ``axcodes`` (e.g. KiTS19's "IPL": a (z, y, x) array)."""
    affine_ras = np.diag([*spacing_ras, 1.0])
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    affine = affine_ras @ nib.orientations.inv_ornt_aff(transform, image_ras.shape)
    paths = {}
    for key, array in (("image", image_ras), ("label", label_ras)):
        stored = nib.orientations.apply_orientation(array, transform)
        paths[key] = str(tmp_path / f"{name}_{key}.nii.gz")
        nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), affine), paths[key])
    return {**paths, "case_id": name}


def _case(shape, box, values, seed):
    """CT-like image with a foreground box (label 1, plus one voxel of label 2) filled with ``values``."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000.0, dtype=np.float32) + rng.normal(0, 3, shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    region = tuple(slice(lo, hi) for lo, hi in box)
    label[region] = 1
    label[box[0][0], box[1][0], box[2][0]] = 2
    image[region] = values.reshape([hi - lo for lo, hi in box])
    return image, label


@pytest.fixture
def three_cases(tmp_path):
    rng = np.random.default_rng(0)
    specs = [
        # shape (RAS), fg box, spacing (RAS), stored orientation
        ((20, 18, 10), ((2, 12), (3, 9), (1, 5)), (1.0, 1.0, 3.0), "RAS"),
        ((16, 16, 30), ((0, 8), (0, 8), (5, 25)), (0.5, 0.5, 2.0), "IPL"),
        ((10, 12, 8), ((1, 4), (2, 10), (0, 3)), (0.8, 0.8, 5.0), "LPS"),
    ]
    items, foreground = [], []
    for i, (shape, box, spacing, axcodes) in enumerate(specs):
        n = int(np.prod([hi - lo for lo, hi in box]))
        values = rng.normal(100 + 20 * i, 30, n).astype(np.float32)
        image, label = _case(shape, box, values, seed=i)
        items.append(_store(tmp_path, f"case_{i}", image, label, spacing, axcodes))
        foreground.append(image[label > 0])
    return items, specs, np.concatenate(foreground)


def test_fingerprint_values(three_cases):
    items, specs, foreground = three_cases
    fp = compute_fingerprint(items, num_classes=3, num_workers=2)
    assert fp["axes"] == "RAS"
    # medians per RAS axis of (1, 0.5, 0.8), (1, 0.5, 0.8), (3, 2, 5): exact, whatever the stored orientation
    assert fp["spacing"] == [0.8, 0.8, 3.0]
    assert fp["cases"]["case_1"]["spacing"] == [0.5, 0.5, 2.0]  # stored as a (z, y, x) IPL array
    assert fp["cases"]["case_1"]["shape"] == [16, 16, 30]
    # fewer than 10,000 foreground voxels per case: the statistics are exact
    stats = fp["intensity"]
    np.testing.assert_allclose(stats["percentile_00_5"], np.percentile(foreground, 0.5), rtol=1e-6)
    np.testing.assert_allclose(stats["percentile_99_5"], np.percentile(foreground, 99.5), rtol=1e-6)
    np.testing.assert_allclose(stats["mean"], foreground.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], foreground.std(), rtol=1e-5)
    np.testing.assert_allclose(stats["median"], np.median(foreground), rtol=1e-6)
    # shape at the median spacing: per-axis median of shape * spacing / target
    resampled = [np.array(s) * np.array(sp) / np.array([0.8, 0.8, 3.0]) for s, _, sp, _ in specs]
    assert fp["median_shape"] == [int(round(v)) for v in np.median(resampled, axis=0)]
    # largest foreground box per axis: x 10 * 1.0 (case 0), y 8 * 0.8 (case 2), z 20 * 2.0 mm (case 1)
    np.testing.assert_allclose(fp["foreground_bbox_max_mm"], [10.0, 6.4, 40.0], rtol=1e-6)
    assert fp["foreground_bbox_max_voxels"] == [13, 8, 14]  # ceil(mm / [0.8, 0.8, 3.0])
    assert fp["labels"] == [0, 1, 2]
    assert fp["num_cases"] == 3 and fp["case_ids"] == ["case_0", "case_1", "case_2"]
    json.dumps(fp)  # JSON-serialisable as is


def test_sampling_is_seeded_and_close_to_the_full_statistics(tmp_path):
    rng = np.random.default_rng(5)
    shape = (40, 40, 20)
    values = rng.gamma(4.0, 25.0, 40 * 40 * 20).astype(np.float32) - 50
    image, label = _case(shape, ((0, 40), (0, 40), (0, 20)), values, seed=1)
    items = [_store(tmp_path, "big", image, label, (1.0, 1.0, 2.0), "RAS")]
    first = compute_fingerprint(items, samples_per_case=10_000)["intensity"]
    assert first == compute_fingerprint(items, samples_per_case=10_000)["intensity"]
    assert first != compute_fingerprint(items, samples_per_case=10_000, seed=1)["intensity"]
    everything = image[label > 0]
    np.testing.assert_allclose(first["mean"], everything.mean(), rtol=0.02)
    np.testing.assert_allclose(first["percentile_99_5"], np.percentile(everything, 99.5), rtol=0.05)


def test_cached_fingerprint_is_reused_and_refreshed(three_cases, tmp_path, monkeypatch):
    items, _, _ = three_cases
    path = tmp_path / "out" / "fingerprint.json"
    computed = load_or_compute_fingerprint(items, path)
    assert json.loads(path.read_text(encoding="utf-8")) == computed

    def fail(*args, **kwargs):
        raise AssertionError("should have used the cache")

    monkeypatch.setattr(fingerprint_module, "compute_fingerprint", fail)
    assert load_or_compute_fingerprint(list(reversed(items)), path) == computed
    monkeypatch.undo()
    refreshed = load_or_compute_fingerprint(items[:2], path)
    assert refreshed["case_ids"] == ["case_0", "case_1"]
    assert json.loads(path.read_text(encoding="utf-8"))["num_cases"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["fingerprint.json"]


def test_named_defaults(tmp_path):
    kits = load_fingerprint(tmp_path / "missing.json", default="kits19")
    assert kits["spacing"] == [0.78125, 0.78125, 3.0]
    assert intensity_normalization(kits) == {"a_min": -79.0, "a_max": 304.0, "subtrahend": 101.0, "divisor": 76.9}
    assert intensity_normalization(load_fingerprint(None, "lits")) == {
        "a_min": -200.0,
        "a_max": 200.0,
        "subtrahend": -200.0,
        "divisor": 400.0,
    }
    assert load_fingerprint(None, "kits19_sauron")["spacing"] == [1.62, 1.62, 3.22]
    kits["spacing"] = None
    assert DEFAULT_FINGERPRINTS["kits19"]["spacing"] == [0.78125, 0.78125, 3.0]  # callers get a copy
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_fingerprint(tmp_path / "missing.json")
    with pytest.raises(KeyError, match="kits19"):
        load_fingerprint(None, "kits99")
    stored = tmp_path / "fp.json"
    stored.write_text(json.dumps({"spacing": [1, 1, 1], "intensity": {}}))
    assert load_fingerprint(stored, default="kits19")["spacing"] == [1, 1, 1]


def test_unlabelled_case_is_a_validation_error(three_cases):
    items, _, _ = three_cases
    unlabelled = {"image": items[0]["image"], "case_id": "nolabel"}
    with pytest.raises(ValueError, match="has no label"):
        compute_fingerprint([unlabelled])
