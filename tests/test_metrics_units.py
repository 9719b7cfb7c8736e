"""KiTS/LiTS metric conventions on small synthetic volumes: empty rules, cropping, lesion matching, size groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_effseg.boxes import union_bbox
from monai_effseg.metrics import (
    dice,
    generalized_dice_surface_score,
    kits_case_metrics,
    lits_case_metrics,
    match_lesions,
    size_group,
    surface_dice,
)
from monai_effseg.metrics.lesions import lesion_detection_metrics
from monai_effseg.metrics.surface import crop_to_union


def box_pair(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """methods.md self-test: a 10x15x15 box and the same box shifted by ``shift`` slices (spacing 2 x 1 x 1)."""
    gt = np.zeros((30, 30, 30), dtype=np.uint8)
    gt[10:20, 8:23, 8:23] = 1
    return np.roll(gt, shift, axis=0), gt


@pytest.mark.parametrize("tolerance, expected", [(1.0, 0.7441), (1.999, 0.7441), (2.0, 1.0)])
def test_surface_dice_self_test_table(tolerance, expected):
    pred, gt = box_pair(1)
    assert surface_dice(pred, gt, (2.0, 1.0, 1.0), tolerance) == pytest.approx(expected, abs=1e-4)


def test_empty_mask_rules_follow_kits21():
    empty = np.zeros((8, 8, 8), dtype=np.uint8)
    full = empty.copy()
    full[2:5, 2:5, 2:5] = 2
    both_empty = kits_case_metrics(empty, empty, (1, 1, 1), "kits21")
    assert all(v == 1.0 for v in both_empty.values())  # MONAI alone would give NaN surface Dice here
    one_empty = kits_case_metrics(empty, full, (1, 1, 1), "kits21")
    assert one_empty["tumor_dice"] == one_empty["tumor_sd"] == 0.0
    assert dice(empty, empty) == 1.0 and dice(empty, empty, empty_value=0.0) == 0.0  # medpy dc convention


def test_kits21_mass_includes_cysts_and_kits19_kidney_is_all_foreground():
    gt = np.zeros((12, 12, 12), dtype=np.uint8)
    gt[2:10, 2:10, 2:10] = 1
    gt[3:6, 3:6, 3:6] = 2
    gt[6:8, 6:8, 6:8] = 3
    pred = gt.copy()
    pred[pred == 3] = 1  # cyst missed, labelled kidney
    m21 = kits_case_metrics(pred, gt, (1, 1, 1), "kits21")
    assert m21["kidney_and_mass_dice"] == 1.0 and m21["tumor_dice"] == 1.0
    assert m21["mass_dice"] == pytest.approx(2 * 27 / (27 + 35))
    m19 = kits_case_metrics(pred, gt, (1, 1, 1), "kits19")
    assert m19["kidney_dice"] == 1.0 and m19["composite"] == 1.0


def test_cropping_is_exact_at_image_borders():
    rng = np.random.default_rng(0)
    gt = (rng.random((20, 24, 22)) > 0.7).astype(np.uint8)  # foreground touches every face
    pred = np.roll(gt, 1, axis=1)
    spacing = (2.5, 0.8, 0.8)
    # no-crop reference: MONAI on the full arrays does its own (identical) cropping, so compare with a padded copy
    padded = [np.pad(a, 5) for a in (pred, gt)]
    for tol in (0.5, 1.0, 3.0):
        assert surface_dice(pred, gt, spacing, tol) == pytest.approx(surface_dice(*padded, spacing, tol), abs=1e-7)
    cropped = crop_to_union(pred, gt)
    assert cropped[0].shape == tuple(n + 2 for n in gt.shape)  # margin lies outside: zero padded
    assert union_bbox(np.zeros((3, 3), np.uint8)) is None


def test_fortran_and_c_ordered_inputs_agree():
    pred, gt = box_pair(1)
    c = kits_case_metrics(pred, gt, (2, 1, 1), "kits19")
    f = kits_case_metrics(np.asfortranarray(pred), np.asfortranarray(gt), (2, 1, 1), "kits19")
    t = kits_case_metrics(torch.from_numpy(pred), torch.from_numpy(gt).float(), (2, 1, 1), "kits19")
    assert c == f == t


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        kits_case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        kits_case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1))
    with pytest.raises(ValueError, match="protocol"):
        kits_case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1, 1), "kits23")


def test_lits_conventions_on_a_shifted_box():
    pred, gt = box_pair(2)
    pred[pred == 1] = 2
    gt[gt == 1] = 2
    extra = pred.copy()
    extra[2:4, 2:4, 2:4] = 2  # 8-voxel false positive: |P| = |G| + 8
    m = lits_case_metrics(extra, gt, (1.0, 1.0, 1.0))
    n_gt, n_pred, inter = 10 * 15 * 15, 10 * 15 * 15 + 8, 8 * 15 * 15
    assert m["tumor_dice"] == pytest.approx(2 * inter / (n_gt + n_pred))
    assert m["tumor_voe"] == pytest.approx(1 - inter / (n_gt + n_pred - inter))
    assert m["tumor_rvd"] == pytest.approx((n_pred - n_gt) / n_gt)
    assert m["tumor_rvd_lits_script"] == pytest.approx((n_gt - n_pred) / n_pred)
    assert m["tumor_hd95"] >= m["tumor_hd95_medpy"]
    assert m["liver_dice"] == m["tumor_dice"]  # liver = label >= 1


def test_lits_distances_are_nan_for_empty_masks():
    gt = np.zeros((10, 10, 10), dtype=np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    pred = gt.copy()
    gt[3:5, 3:5, 3:5] = 2  # tumour only in the reference
    m = lits_case_metrics(pred, gt, (1, 1, 1))
    for key in ("assd", "mssd", "hd95", "hd95_medpy", "assd_lits_script", "rvd_lits_script"):
        assert math.isnan(m[f"tumor_{key}"])  # the official script would say 0 for ASSD and MSSD
    assert m["tumor_dice"] == 0.0 and m["tumor_rvd"] == -1.0
    assert m["liver_dice"] == 1.0 and m["liver_assd"] == 0.0


def blobs(shape, spheres):
    """Label map with balls (centre, radius) set to 1."""
    grid = np.indices(shape)
    out = np.zeros(shape, dtype=bool)
    for centre, radius in spheres:
        out |= sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
    return out


def test_lesion_matching_merges_references_bridged_by_one_prediction():
    ref = blobs((40, 40, 40), [((10, 10, 10), 3), ((10, 10, 20), 3), ((30, 30, 30), 3)])
    pred = blobs((40, 40, 40), [((10, 10, 15), 4)])  # one elongated-enough prediction touching both left lesions
    pred |= blobs((40, 40, 40), [((10, 10, 10), 3), ((10, 10, 20), 3)])
    pred |= blobs((40, 40, 40), [((2, 35, 2), 1)])  # isolated false positive
    match = match_lesions(pred, ref)
    assert match.n_reference == 3
    assert sorted(match.n_merged.tolist()) == [1, 2]
    metrics = lesion_detection_metrics(match)
    assert metrics["lesion_tp_iou_gt0"] == 2  # the merged pair counts as two detections; the far lesion is missed
    assert metrics["lesion_fp_iou_gt0"] == 1
    assert metrics["lesion_recall_iou_gt0"] == pytest.approx(2 / 3)
    assert metrics["lesion_precision_iou_gt0"] == pytest.approx(2 / 3)


def test_lesion_matching_combines_predictions_on_one_reference():
    ref = blobs((30, 30, 30), [((15, 15, 15), 6)])
    pred = ref.copy()
    pred[:, 15, :] = False  # the prediction is split in two pieces
    pred[:, :, 15] = False
    match = match_lesions(pred, ref, connectivity=1)
    assert match.n_unmatched_pred == 0 and len(match.n_merged) == 1
    assert match.iou[0] == pytest.approx(pred.sum() / ref.sum())
    assert lesion_detection_metrics(match)["lesion_precision_iou50"] == 1.0


def test_iou_thresholds():
    ref = blobs((30, 30, 30), [((15, 15, 15), 6)])
    pred = np.zeros_like(ref)
    pred[15:, :, :] = ref[15:]
    pred[18:] = False  # a thin slab: 0 < IoU < 0.5
    m = lesion_detection_metrics(match_lesions(pred, ref))
    assert (m["lesion_tp_iou_gt0"], m["lesion_fp_iou_gt0"]) == (1, 0)
    assert (m["lesion_tp_iou50"], m["lesion_fp_iou50"]) == (0, 1)  # the low-IoU prediction becomes a false positive


def test_size_groups_follow_tustumis_table_4_1():
    assert [size_group(v) for v in (1, 999, 1000, 10000, 10001)] == ["small", "small", "medium", "medium", "large"]
    ref = np.zeros((60, 60, 60), dtype=bool)
    ref[2:7, 2:7, 2:7] = True  # 125 voxels: small
    ref[20:31, 20:31, 20:31] = True  # 1331: medium
    ref[35:58, 35:58, 35:58] = True  # 12167: large
    pred = ref.copy()
    pred[2:7, 2:7, 2:7] = False  # small lesion missed
    m = lesion_detection_metrics(match_lesions(pred, ref))
    assert (m["lesions_small"], m["lesions_medium"], m["lesions_large"]) == (1, 1, 1)
    assert (m["lesion_dice_small"], m["lesion_dice_medium"], m["lesion_dice_large"]) == (0.0, 1.0, 1.0)


def test_no_lesions_anywhere():
    empty = np.zeros((5, 5, 5), dtype=bool)
    m = lesion_detection_metrics(match_lesions(empty, empty))
    assert m["lesions_reference"] == 0 and math.isnan(m["lesion_recall_iou_gt0"])
    assert math.isnan(m["lesion_precision_iou50"]) and math.isnan(m["lesion_dice_small"])


def test_generalized_dice_surface_score_is_the_mean_of_both():
    gt = np.zeros((20, 20, 20), dtype=np.uint8)
    gt[4:16, 4:16, 4:16] = 1
    gt[8:12, 8:12, 8:12] = 2
    perfect = generalized_dice_surface_score(gt, gt, (1, 1, 1))
    assert perfect == {"generalized_dice": 1.0, "surface_dice": 1.0, "score": 1.0}
    shifted = generalized_dice_surface_score(np.roll(gt, 2, axis=0), gt, (1, 1, 1))
    assert shifted["score"] == pytest.approx(0.5 * (shifted["generalized_dice"] + shifted["surface_dice"]))
    assert 0 < shifted["generalized_dice"] < 1 and 0 < shifted["surface_dice"] < 1


def test_per_component_surface_path_equals_monai_dense_path(monkeypatch):
    import monai_effseg.metrics.surface as surface

    rng = np.random.default_rng(1)
    gt = blobs((40, 44, 36), [((12, 12, 10), 6), ((28, 30, 24), 5)]).astype(np.uint8)
    pred = np.roll(gt, (1, 2, 0), axis=(0, 1, 2))
    pred[rng.random(pred.shape) > 0.995] = 1  # scattered specks, some touching the blobs
    pred[0, 0, :3] = 1  # touches the image border
    spacing = (2.5, 0.8, 0.7)
    dense = [surface_dice(pred, gt, spacing, t) for t in (0.5, 1.1, 3.0)]
    dense_dist = [surface.surface_distances(pred, gt, spacing, c) for c in (1, 2)]
    monkeypatch.setattr(surface, "_DENSE_MAX_VOXELS", 0)  # surface Dice: never compute_surface_dice
    monkeypatch.setattr(surface, "_SPARSE_MIN_VOXELS", 0)  # split every mask into components
    monkeypatch.setattr(surface, "_SPARSE_RATIO", 0)
    assert surface._is_sparse(pred, gt)
    assert [surface_dice(pred, gt, spacing, t) for t in (0.5, 1.1, 3.0)] == pytest.approx(dense, abs=1e-6)
    for c, (d_pg, d_gp) in zip((1, 2), dense_dist):
        s_pg, s_gp = surface.surface_distances(pred, gt, spacing, c)
        assert sorted(s_pg) == pytest.approx(sorted(d_pg), abs=1e-5)
        assert sorted(s_gp) == pytest.approx(sorted(d_gp), abs=1e-5)
