"""Atomic outputs (never a half-written NIfTI or JSON) and batch-inference inputs that survive bad files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import LoadImage, LoadImaged, SaveImaged

from monai_effseg.data import (
    AtomicITKWriter,
    AtomicNibabelWriter,
    DataValidationError,
    atomic_write_json,
    atomic_write_text,
    inference_datalist,
)

AFFINE = np.array([[0.0, 0.0, -0.8, 10.0], [0.0, -0.8, 0.0, 20.0], [-3.0, 0.0, 0.0, 30.0], [0.0, 0.0, 0.0, 1.0]])


def _ct(shape=(12, 10, 6), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000.0, np.float32)
    image[2:-2, 2:-2, :] = 40.0
    return (image + rng.normal(0, 5, shape)).astype(np.float32)


def _prediction(folder: Path, name: str = "case_7.nii.gz") -> MetaTensor:
    """A channel-first label map as a pipeline holds it (loaded, so its metadata is what MONAI writers expect)."""
    label = np.zeros((12, 10, 6), dtype=np.uint8)
    label[3:6, 2:5, 1:4] = 2
    source = folder / "inputs" / name
    source.parent.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(label, AFFINE), str(source))
    return LoadImaged("pred", ensure_channel_first=True)({"pred": str(source)})["pred"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_atomic_text_and_json(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    atomic_write_json(target, {"dice": [0.9, 0.8]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"dice": [0.9, 0.8]}
    atomic_write_text(tmp_path / "notes.txt", "ok")
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "ok"
    assert _leftovers(tmp_path) == [] and _leftovers(target.parent) == []


def test_atomic_json_interrupted_keeps_the_old_file(tmp_path):
    target = tmp_path / "split.json"
    atomic_write_json(target, {"training": ["a"]})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})  # json fails half-way through the object
    assert json.loads(target.read_text(encoding="utf-8")) == {"training": ["a"]}
    assert _leftovers(tmp_path) == []


def test_save_imaged_with_atomic_writer(tmp_path):
    saver = SaveImaged(
        "pred",
        output_dir=tmp_path,
        output_postfix="seg",
        separate_folder=False,
        resample=False,
        output_dtype=np.uint8,
        writer=AtomicNibabelWriter,
    )
    saver({"pred": _prediction(tmp_path)})
    written = nib.load(tmp_path / "case_7_seg.nii.gz")
    np.testing.assert_allclose(written.affine, AFFINE, atol=1e-5)
    assert written.shape == (12, 10, 6) and written.get_data_dtype() == np.uint8
    assert np.asarray(written.dataobj)[4, 3, 2] == 2
    assert _leftovers(tmp_path) == []


def _partial_save(img, filename, *args, **kwargs):
    """Simulates a crash in nib.save after part of the file reached the disk."""
    Path(filename).write_bytes(b"\x1f\x8b partial")
    raise OSError("disk full")


def test_interrupted_nifti_write_leaves_target_untouched(tmp_path, monkeypatch):
    target = tmp_path / "case_7_seg.nii.gz"
    saver = SaveImaged(
        "pred",
        output_dir=tmp_path,
        output_postfix="seg",
        separate_folder=False,
        resample=False,
        writer=AtomicNibabelWriter,
    )
    prediction = _prediction(tmp_path)
    saver({"pred": prediction})
    before = target.read_bytes()
    monkeypatch.setattr(nib, "save", _partial_save)
    with pytest.raises(RuntimeError, match="disk full"):  # SaveImage re-raises writer errors as RuntimeError
        saver({"pred": prediction * 0})
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []
    # MONAI's plain writer, by contrast, leaves a corrupt file behind: this is what the atomic writer prevents.
    plain = tmp_path / "plain.nii.gz"
    writer = NibabelWriter()
    writer.set_data_array(prediction, channel_dim=0)
    writer.set_metadata(prediction.meta, resample=False)
    with pytest.raises(OSError):
        writer.write(plain)
    assert plain.read_bytes() == b"\x1f\x8b partial"


def test_atomic_itk_writer(tmp_path):
    prediction = _prediction(tmp_path)
    writer = AtomicITKWriter()
    writer.set_data_array(prediction, channel_dim=0)
    writer.set_metadata(prediction.meta, resample=False)
    writer.write(tmp_path / "pred.nrrd")
    loaded = LoadImage(image_only=True)(str(tmp_path / "pred.nrrd"))
    assert tuple(loaded.shape) == (12, 10, 6)
    np.testing.assert_allclose(loaded.affine.numpy(), AFFINE, atol=1e-4)
    assert _leftovers(tmp_path) == [] and loaded[4, 3, 2] == 2


def _write_dicom_series(folder: Path, volume_zyx: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> None:
    folder.mkdir(parents=True)
    image_type = itk.Image[itk.SS, 2]
    for k, plane in enumerate(volume_zyx.astype(np.int16)):
        slice_image = itk.image_from_array(np.ascontiguousarray(plane))
        slice_image.SetSpacing(spacing[:2])
        tags = slice_image.GetMetaDataDictionary()
        tags["0008|0060"] = "CT"
        tags["0020|000d"] = "1.2.826.0.1.3680043.2.1125.1"
        tags["0020|000e"] = "1.2.826.0.1.3680043.2.1125.1.2"
        tags["0020|0032"] = f"-10\\-20\\{k * spacing[2]:.3f}"
        tags["0020|0037"] = "1\\0\\0\\0\\1\\0"
        tags["0020|0013"] = str(k + 1)
        tags["0028|0030"] = f"{spacing[1]}\\{spacing[0]}"
        tags["0018|0050"] = str(spacing[2])
        dicom_io = itk.GDCMImageIO.New()
        dicom_io.SetKeepOriginalUID(True)
        writer = itk.ImageFileWriter[image_type].New(Input=slice_image, FileName=str(folder / f"IM{k:04d}.dcm"))
        writer.SetImageIO(dicom_io)
        writer.Update()


def test_inference_datalist_skips_bad_files_and_continues(tmp_path, caplog):
    nib.save(nib.Nifti1Image(_ct(), AFFINE), str(tmp_path / "a.nii.gz"))
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(_ct(seed=1).T)), str(tmp_path / "b.nrrd"))
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(_ct(seed=2).T)), str(tmp_path / "c.mha"))
    _write_dicom_series(tmp_path / "patient1" / "series", _ct((6, 21, 22)))
    raw = (tmp_path / "a.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.nii").write_bytes(b"")
    nan = _ct()
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, AFFINE), str(tmp_path / "nan.nii.gz"))
    nib.save(nib.Nifti1Image(_ct()[:, :, 0], AFFINE), str(tmp_path / "slice.nii.gz"))
    (tmp_path / "report.txt").write_text("not an image")

    with caplog.at_level(logging.ERROR, logger="monai_effseg"):
        items = inference_datalist(tmp_path)
    assert [item["case_id"] for item in items] == ["a", "b", "c", "patient1_series"]
    assert items[3]["image"] == str(tmp_path / "patient1" / "series")
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    for name, problem in [
        ("truncated.nii.gz", "truncated"),
        ("empty.nii", "empty"),
        ("nan.nii.gz", "NaN"),
        ("slice.nii.gz", "2D"),
    ]:
        assert f"{tmp_path / name}: " in errors and problem in errors
    series = LoadImage(image_only=True)(items[3]["image"])
    assert tuple(series.shape) == (22, 21, 6)
    np.testing.assert_allclose(np.diag(series.affine.numpy())[:3], [-0.8, -0.8, 2.5], atol=1e-4)


def test_inference_datalist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inference_datalist(tmp_path / "missing")
    with pytest.raises(DataValidationError, match="no image found"):
        inference_datalist(tmp_path)
    (tmp_path / "bad.nii.gz").write_bytes(b"")
    with pytest.raises(DataValidationError, match="bad.nii.gz: empty file"):
        inference_datalist(tmp_path)
    single = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(_ct(), AFFINE), str(single))
    assert inference_datalist(single) == [{"image": str(single), "case_id": "one"}]
