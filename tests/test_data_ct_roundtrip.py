"""CT preprocessing from a fingerprint, and the round trip a prediction makes back to the input's exact geometry:
real KiTS19 (z, y, x) IPL labels, the real RAS abdominal CT, an LPS copy of it, and a synthetic phantom."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, Invertd, SaveImaged

from monai_effseg.data import AtomicNibabelWriter, load_fingerprint, synthetic_dataset
from monai_effseg.transforms.ct import CTNormalized, ct_preprocessing, fixed_ct_normalize

KITS19 = load_fingerprint(None, default="kits19")


def test_fixed_windows():
    x = {"image": torch.tensor([[-1000.0, -79.0, 101.0, 304.0, 2000.0]])}
    sauron = fixed_ct_normalize("image", -79, 304, 101, 76.9)(x)["image"]
    expected = (np.clip([-1000.0, -79.0, 101.0, 304.0, 2000.0], -79, 304) - 101) / 76.9
    np.testing.assert_allclose(sauron.numpy()[0], expected, rtol=1e-5, atol=1e-6)
    lits = fixed_ct_normalize("image", -200, 200, -200, 400)({"image": torch.tensor([[-500.0, 0.0, 500.0]])})
    np.testing.assert_allclose(lits["image"].numpy()[0], [0.0, 0.5, 1.0], atol=1e-6)


def test_ct_normalized_from_fingerprint_and_defaults():
    fingerprint = {"intensity": {"percentile_00_5": -50.0, "percentile_99_5": 250.0, "mean": 120.0, "std": 60.0}}
    values = np.array([[-300.0, -50.0, 0.0, 120.0, 250.0, 900.0]], dtype=np.float32)
    out = CTNormalized("image", fingerprint)({"image": torch.as_tensor(values)})["image"].numpy()
    np.testing.assert_allclose(out, (np.clip(values, -50, 250) - 120) / 60, rtol=1e-5, atol=1e-6)
    assert CTNormalized("image", "kits19").normalization["divisor"] == 76.9
    lits = CTNormalized("image", "lits")({"image": torch.tensor([[-1000.0, 200.0]])})["image"]
    np.testing.assert_allclose(lits.numpy(), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="intensity statistics"):
        CTNormalized("image", {"intensity": {"mean": 1.0}})


def _predict_and_write(item: dict, preprocessing: Compose, out_dir: Path) -> Path:
    """Preprocess, use the resampled label as the "prediction", invert it and write it atomically."""
    data = preprocessing(item)
    data["pred"] = data["label"].clone()
    postprocessing = Compose(
        [
            Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=True),
            SaveImaged(
                "pred",
                output_dir=out_dir,
                output_postfix="seg",
                separate_folder=False,
                resample=False,
                output_dtype=np.uint8,
                writer=AtomicNibabelWriter,
                print_log=False,
            ),
        ]
    )
    postprocessing(data)
    name = Path(item["image"]).name.replace(".nii.gz", "")
    return out_dir / f"{name}_seg.nii.gz"


def _assert_same_geometry(written: Path, reference: Path, min_agreement: float) -> None:
    out, ref = nib.load(written), nib.load(reference)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(ref.affine)
    agreement = (np.asarray(out.dataobj) == np.asarray(ref.dataobj).astype(np.uint8)).mean()
    assert agreement >= min_agreement, agreement


def _image_for_label(label_path: Path, image_path: Path) -> None:
    label = nib.load(label_path)
    values = np.asarray(label.dataobj)
    rng = np.random.default_rng(0)
    lut = np.array([40, 180, 60, 10], dtype=np.float32)
    image = lut[values.astype(int)] + rng.normal(0, 10, values.shape).astype(np.float32)
    image[:, :, :40] = -1000  # some air, as in any CT
    nib.save(nib.Nifti1Image(image.astype(np.int16), label.affine), str(image_path))


def test_kits19_ipl_round_trip(test_data, tmp_path):
    label_path = test_data / "kits19_labels" / "case_00011.nii.gz"  # (80, 512, 512) IPL, 5 mm slices
    assert nib.aff2axcodes(nib.load(label_path).affine) == ("I", "P", "L")
    image_path = tmp_path / "case_00011.nii.gz"
    _image_for_label(label_path, image_path)
    preprocessing = ct_preprocessing(KITS19, spacing=(1.4, 1.4, 4.0))
    written = _predict_and_write({"image": str(image_path), "label": str(label_path)}, preprocessing, tmp_path / "out")
    _assert_same_geometry(written, label_path, min_agreement=0.995)


def test_abdomen_ct_ras_and_lps_round_trips(test_data, tmp_path):
    data = test_data / "abdomen_ct_3mm"
    item = {"image": str(data / "ct.nii.gz"), "label": str(data / "liver.nii.gz")}
    preprocessing = ct_preprocessing(KITS19)  # the published 0.78 x 0.78 x 3 mm target
    written = _predict_and_write(item, preprocessing, tmp_path / "ras")
    assert nib.aff2axcodes(nib.load(written).affine) == ("R", "A", "S")
    _assert_same_geometry(written, data / "liver.nii.gz", min_agreement=0.999)

    lps = {}
    for key, name in (("image", "ct.nii.gz"), ("label", "liver.nii.gz")):
        source = nib.load(data / name)
        flip = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(source.affine), nib.orientations.axcodes2ornt(("L", "P", "S"))
        )
        array = nib.orientations.apply_orientation(np.asarray(source.dataobj), flip)
        affine = source.affine @ nib.orientations.inv_ornt_aff(flip, source.shape)
        lps[key] = str(tmp_path / f"lps_{name}")
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), lps[key])
    written = _predict_and_write(lps, ct_preprocessing(KITS19, spacing=(1.5, 1.5, 3.0)), tmp_path / "lps")
    assert nib.aff2axcodes(nib.load(written).affine) == ("L", "P", "S")
    _assert_same_geometry(written, Path(lps["label"]), min_agreement=0.999)


def test_preprocessing_output_and_spline_round_trip(tmp_path):
    root = synthetic_dataset("kits", num_cases=1, root=tmp_path / "cache", shape=(48, 48, 24))
    item = {"image": str(root / "case_00000/imaging.nii.gz"), "label": str(root / "case_00000/segmentation.nii.gz")}
    assert nib.aff2axcodes(nib.load(item["image"]).affine) == ("I", "P", "L")
    fingerprint = dict(KITS19, spacing=[2.0, 2.0, 3.0])
    preprocessing = ct_preprocessing(fingerprint, spacing_mode=3)  # nnU-Net's third-order spline for the image
    data = preprocessing(item)
    image = data["image"]
    assert image.shape[0] == 1 and image.dtype == torch.float32
    # resampled in float32, so the inverse resampling of a prediction is too (half the memory of MONAI's float64)
    resampling = [op["extra_info"]["dtype"] for op in image.applied_operations if op["class"].endswith("Resample")]
    assert resampling == ["float32"]
    np.testing.assert_allclose(np.diag(image.affine.numpy())[:3], [2.0, 2.0, 3.0], atol=1e-6)
    assert set(torch.unique(data["label"]).tolist()) <= {0.0, 1.0, 2.0}
    assert image.min() >= (-79 - 101) / 76.9 - 1e-5 and image.max() <= (304 - 101) / 76.9 + 1e-5
    written = _predict_and_write(item, preprocessing, tmp_path / "out")
    _assert_same_geometry(written, Path(item["label"]), min_agreement=0.97)

    inference = ct_preprocessing(fingerprint, image_only=True)
    assert set(inference({"image": item["image"]})) == {"image"}
