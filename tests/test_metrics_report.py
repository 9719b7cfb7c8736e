"""Folder evaluation: case matching across layouts, outputs, and clear errors for mismatches."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_effseg.metrics import kits_case_metrics, lits_case_metrics
from monai_effseg.metrics.report import (
    add_evaluate_arguments,
    evaluate_datalist,
    evaluate_folders,
    find_cases,
    run_evaluate,
)


def real_crop(test_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """case_00011 (5 mm slices) cropped to its foreground, as (z, y, x) uint8 with its KiTS IPL affine."""
    img = nib.load(str(test_data / "kits19_labels" / "case_00011.nii.gz"))
    seg = np.asanyarray(img.dataobj)[8:35, 220:370, 125:440]
    return np.ascontiguousarray(seg), img.affine


def save(path: Path, arr: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), affine), str(path))


@pytest.fixture(scope="module")
def kits_dirs(tmp_path_factory, test_data):
    seg, affine = real_crop(test_data)
    root = tmp_path_factory.mktemp("kits")
    preds = {1: np.roll(seg, 1, axis=1), 2: np.where(seg == 2, 1, seg), 3: seg}
    for case, pred in preds.items():
        save(root / "gt" / f"case_{case:05d}" / "segmentation.nii.gz", seg, affine)
        save(root / "gt" / f"case_{case:05d}" / "imaging.nii.gz", np.zeros_like(seg), affine)
    save(root / "pred" / "case_00001.nii.gz", preds[1], affine)
    save(root / "pred" / "case_00002" / "case_00002_seg.nii.gz", preds[2], affine)  # MONAI SaveImage layout
    save(root / "pred" / "case_00003.nii.gz", preds[3], affine)
    spacing = nib.load(str(root / "gt" / "case_00001" / "segmentation.nii.gz")).header.get_zooms()
    return root, seg, preds, tuple(float(s) for s in spacing)


def test_find_cases_understands_the_layouts(kits_dirs):
    root, *_ = kits_dirs
    gts, preds = find_cases(root / "gt"), find_cases(root / "pred")
    assert sorted(gts) == sorted(preds) == ["1", "2", "3"]
    assert gts["2"][1].name == "segmentation.nii.gz"  # imaging.nii.gz is skipped
    assert preds["2"] == ("case_00002", root / "pred" / "case_00002" / "case_00002_seg.nii.gz")


def test_evaluate_folders_writes_csv_json_and_plots(kits_dirs, tmp_path):
    root, seg, preds, spacing = kits_dirs
    summary = evaluate_folders(root / "pred", root / "gt", "kits21", tmp_path / "out")
    expected = [kits_case_metrics(preds[c], seg, spacing, "kits21") for c in (1, 2, 3)]
    with open(tmp_path / "out" / "metrics_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["case_00001", "case_00002", "case_00003"]
    for row, exp in zip(rows, expected):
        assert float(row["tumor_sd"]) == pytest.approx(exp["tumor_sd"])
    on_disk = json.loads((tmp_path / "out" / "metrics_summary.json").read_text(encoding="utf-8"))
    assert on_disk["metrics"] == summary["metrics"]
    stats = summary["metrics"]["tumor_dice"]
    assert stats["mean"] == pytest.approx(np.mean([e["tumor_dice"] for e in expected]))
    assert stats["median"] == pytest.approx(np.median([e["tumor_dice"] for e in expected]))
    assert stats["n"] == 3 and stats["n_nan"] == 0
    for region in ("kidney_and_mass", "mass", "tumor"):
        png = tmp_path / "out" / f"boxplot_{region}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lits_layout_and_pooled_summary(tmp_path, test_data):
    seg, _ = real_crop(test_data)
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    pred = seg.copy()
    pred[2:4, 5:9, 5:9] = 2  # a small false-positive lesion
    for n, p in ((3, pred), (7, np.zeros_like(seg))):
        save(tmp_path / "gt" / f"segmentation-{n}.nii", seg, affine)
        save(tmp_path / "gt" / f"volume-{n}.nii", np.zeros_like(seg), affine)
        save(tmp_path / "pred" / f"test-segmentation-{n}.nii", p, affine)
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", "lits", tmp_path / "out")
    per_case = [lits_case_metrics(p, seg, (0.7, 0.7, 5.0)) for p in (pred, np.zeros_like(seg))]
    inter = sum(m["tumor_intersection"] for m in per_case)
    total = sum(m["tumor_vol_pred"] + m["tumor_vol_gt"] for m in per_case)
    assert summary["dice_global"]["tumor"] == pytest.approx(2 * inter / total)
    assert summary["metrics"]["tumor_assd"]["n_nan"] == 1  # the empty prediction: no distance, counted apart
    assert summary["empty_cases"]["tumor"] == {"reference_empty": 0, "prediction_empty": 1, "distances_undefined": 1}
    detection = summary["lesion_detection"]
    assert detection["reference_lesions"] == 2 and detection["tp_iou_gt0"] == 1 and detection["fp_iou_gt0"] == 1
    assert summary["tumor_size_groups"]["large"]["lesions"] == 2
    assert (tmp_path / "out" / "boxplot_liver.png").is_file()


def test_predictions_named_after_lits_images_are_found(tmp_path, test_data):
    """A bundle saves its prediction under the image's name (``volume-3.nii``): in a prediction folder that is a
    label map, while in a reference folder ``volume-*`` stays an image."""
    seg, _ = real_crop(test_data)
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    save(tmp_path / "gt" / "segmentation-3.nii", seg, affine)
    save(tmp_path / "gt" / "volume-3.nii", np.zeros_like(seg), affine)
    save(tmp_path / "pred" / "volume-3.nii", seg, affine)
    assert [p.name for _, p in find_cases(tmp_path / "gt").values()] == ["segmentation-3.nii"]
    datalist = [{"case_id": "volume-3", "image": str(tmp_path / "gt" / "volume-3.nii"),
                 "label": str(tmp_path / "gt" / "segmentation-3.nii")}]  # fmt: skip
    summary = evaluate_datalist(datalist, tmp_path / "pred", tmp_path / "out", "lits")
    assert summary["metrics"]["liver_dice"]["mean"] == pytest.approx(1.0)
    assert evaluate_folders(tmp_path / "pred", tmp_path / "gt", "lits", tmp_path / "out2")["metrics"]


def test_mismatched_case_lists_name_the_cases(kits_dirs, tmp_path):
    root, seg, _, _ = kits_dirs
    pred_dir = tmp_path / "pred"
    affine = nib.load(str(root / "gt" / "case_00001" / "segmentation.nii.gz")).affine
    save(pred_dir / "case_00001.nii.gz", seg, affine)
    save(pred_dir / "case_00099.nii.gz", seg, affine)
    with pytest.raises(ValueError) as err:
        evaluate_folders(pred_dir, root / "gt", "kits19")
    message = str(err.value)
    assert "case_00002" in message and "case_00003" in message and "case_00099" in message


def test_missing_cases_can_be_skipped_but_extra_predictions_cannot(kits_dirs, tmp_path):
    root, seg, _, _ = kits_dirs
    affine = nib.load(str(root / "gt" / "case_00001" / "segmentation.nii.gz")).affine
    save(tmp_path / "pred" / "case_00001.nii.gz", seg, affine)
    summary = evaluate_folders(tmp_path / "pred", root / "gt", "kits19", require_all_gt=False)
    assert summary["n_cases"] == 1 and summary["metrics"]["composite"]["mean"] == 1.0


def test_geometry_mismatch_names_the_cases(kits_dirs, tmp_path):
    root, seg, _, _ = kits_dirs
    good = nib.load(str(root / "gt" / "case_00001" / "segmentation.nii.gz")).affine
    save(tmp_path / "pred" / "case_00001.nii.gz", seg, good)
    save(tmp_path / "pred" / "case_00002.nii.gz", seg[:, :-1], good)  # wrong shape
    save(tmp_path / "pred" / "case_00003.nii.gz", seg, good @ np.diag([1, 1, -1, 1]))  # flipped axis
    with pytest.raises(ValueError, match="2 case") as err:
        evaluate_folders(tmp_path / "pred", root / "gt", "kits21")
    assert "case_00002: shape" in str(err.value) and "case_00003: affine" in str(err.value)


def test_unknown_protocol(kits_dirs):
    root, *_ = kits_dirs
    with pytest.raises(ValueError, match="protocol"):
        evaluate_folders(root / "pred", root / "gt", "brats")


def test_cli_hooks(kits_dirs, tmp_path, capsys):
    root, *_ = kits_dirs
    parser = add_evaluate_arguments(argparse.ArgumentParser(prog="effseg evaluate"))
    args = parser.parse_args([str(root / "pred"), str(root / "gt"), "--protocol", "kits19", "--out", str(tmp_path)])
    assert run_evaluate(args) == 0
    assert "composite" in capsys.readouterr().out
    assert (tmp_path / "metrics_summary.json").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args([str(root / "pred"), str(root / "gt"), "--protocol", "kits23"])


def test_evaluate_datalist_as_bundles_call_it(kits_dirs, tmp_path, test_data):
    root, seg, preds, spacing = kits_dirs
    ct = root / "gt" / "case_00001" / "imaging.nii.gz"  # zeros: enough for the overlay plumbing
    datalist = [
        {
            "image": str(ct),
            "label": str(root / "gt" / f"case_{c:05d}" / "segmentation.nii.gz"),
            "case_id": f"case_{c:05d}",
        }
        for c in (1, 2)
    ]
    summary = evaluate_datalist(datalist, root / "pred", tmp_path / "report", protocol="kits19")
    assert summary["n_cases"] == 2  # case_00003's prediction is not in the datalist: ignored
    expected = np.mean([kits_case_metrics(preds[c], seg, spacing, "kits19")["composite"] for c in (1, 2)])
    assert summary["metrics"]["composite"]["mean"] == pytest.approx(expected)
    assert sorted(Path(p).name for p in summary["files"]["overlays"]) == ["overlay_best.png", "overlay_worst.png"]
    with pytest.raises(ValueError, match="case_00004"):
        evaluate_datalist(datalist + [{**datalist[0], "case_id": "case_00004"}], root / "pred", None)
