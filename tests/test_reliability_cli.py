"""``effseg evaluate`` and ``effseg fingerprint`` on the inputs users get wrong (issue 24)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_effseg.cli import main


@pytest.fixture(scope="module")
def lits_data(tmp_path_factory) -> Path:
    from monai_effseg.data import synthetic_dataset

    return synthetic_dataset("lits", num_cases=2, seed=3, shape=(32, 32, 16), root=tmp_path_factory.mktemp("syn"))


def _predictions(reference: Path, dst: Path, transform=None) -> Path:
    """Predictions named like LiTS predictions (``volume-N.nii.gz``): the reference labels, optionally altered."""
    from monai_effseg.data import build_datalist

    dst.mkdir()
    for item in build_datalist(reference):
        label = nib.load(item["label"])
        data = np.asanyarray(label.dataobj)
        data = data if transform is None else transform(data)
        nib.save(nib.Nifti1Image(data, label.affine), dst / (Path(item["image"]).name.split(".")[0] + ".nii.gz"))
    return dst


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_evaluate_refuses_swapped_folders_and_writes_nothing_into_the_reference(lits_data, tmp_path):
    preds = _predictions(lits_data, tmp_path / "preds")
    before = _tree(lits_data)
    assert main(["evaluate", str(preds), str(lits_data), "--protocol", "lits", "--out", str(tmp_path / "ok")]) == 0
    with pytest.raises(ValueError, match="swapped") as err:
        main(["evaluate", str(lits_data), str(preds), "--protocol", "lits"])
    assert str(lits_data) in str(err.value)
    assert _tree(lits_data) == before, "effseg evaluate wrote into the reference folder"


def test_evaluate_never_writes_into_the_reference_folder_by_default(lits_data, tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(lits_data, reference)
    _predictions(lits_data, reference / "preds")  # predictions kept inside the reference folder
    before = _tree(reference)
    with pytest.raises(SystemExit, match="--out"):
        main(["evaluate", str(reference / "preds"), str(reference), "--protocol", "lits", "--only-predicted"])
    assert _tree(reference) == before


@pytest.mark.parametrize(
    "transform, match",
    [
        (lambda d: (d / 2.0).astype(np.float32) + 0.25, "non-integer values"),  # a probability map
        (lambda d: np.where(d == 1, 7, d).astype(np.uint8), r"label\(s\) \[7\]"),
    ],
    ids=["probability_map", "label_7"],
)
def test_evaluate_rejects_float_and_out_of_range_predictions(lits_data, tmp_path, transform, match):
    preds = _predictions(lits_data, tmp_path / "preds", transform)
    with pytest.raises(ValueError, match=match) as err:
        main(["evaluate", str(preds), str(lits_data), "--protocol", "lits", "--out", str(tmp_path / "report")])
    assert str(preds) in str(err.value)
    assert not (tmp_path / "report" / "metrics_summary.json").exists()


def test_fingerprint_warns_about_unusual_labels_without_num_classes(lits_data, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(lits_data, data)
    seg = next(data.glob("segmentation-*.nii*"))
    img = nib.load(seg)
    nib.save(nib.Nifti1Image(np.where(np.asanyarray(img.dataobj) == 1, 7, img.dataobj).astype(np.uint8), img.affine),
             seg)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="monai_effseg.data.fingerprint"):
        assert main(["fingerprint", str(data), "--out", str(tmp_path / "fp.json")]) == 0
    warning = next(r.getMessage() for r in caplog.records if "outside the usual" in r.getMessage())
    assert "[7]" in warning and "--num-classes" in warning


def test_fingerprint_of_a_read_only_dataset_fails_before_reading_and_suggests_out(
    lits_data, tmp_path, capsys, monkeypatch
):
    import tempfile

    import monai_effseg.data.fingerprint as fp

    data = tmp_path / "data"
    shutil.copytree(lits_data, data)
    data.chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: make this one refuse as a read-only mount would
        real = tempfile.TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == data:
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
        monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    read = []
    monkeypatch.setattr(fp, "compute_fingerprint", lambda *a, **k: read.append(1) or {})
    try:
        assert main(["fingerprint", str(data)]) == 2
    finally:
        data.chmod(0o755)
    err = capsys.readouterr().err
    assert str(data) in err and "--out" in err
    assert not read, "the cases were read before finding that the output cannot be written"
