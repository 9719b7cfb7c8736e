"""LiTS evaluation protocol (Bilic et al., arXiv 1901.04056), as Tustumi, "Automatic Liver Tumor Segmentation from CT
Images Based on 2D and 3D Deep Neural Networks" (thesis, 2020), section 3.2, uses it.

Regions: liver = label >= 1 (liver and tumour), tumor = label 2. Per region and case:

- ``dice``: 2|P∩G| / (|P|+|G|), 1 when both are empty (medpy ``dc``, used by the LiTS script, returns 0 there).
  Challenge "Dice per case" = mean of these; "Dice global" pools ``intersection`` and volumes over all cases.
- ``voe``: 1 - Jaccard (LiTS script ``1 - metric.jc``); 0 when both are empty.
- ``rvd``: (|P| - |G|) / |G|, the textbook relative volume difference (Tustumi's eq. 3.5; medpy ``ravd(P, G)``).
- ``rvd_lits_script``: (|G| - |P|) / |P|, what the official script computes (``metric.ravd(label, pred)``, the
  arguments swapped). NaN when its denominator is 0.
- ``assd``: pooled mean surface distance, 6-connected voxel-centre edges = medpy 0.5 ``assd`` = MONAI
  ``compute_average_surface_distance(symmetric=True)``.
- ``assd_lits_script``: the same with the LiTS ``Surface`` class' 18-neighbourhood erosion (thicker edges).
- ``mssd``: maximum symmetric surface distance = Hausdorff = medpy ``hd`` (the LiTS script's MSSD).
- ``hd95``: MONAI convention (max of the directed 95th percentiles); ``hd95_medpy``: medpy (pooled percentile).

Distances are NaN when either mask is empty. The official script reports ASSD = MSSD = 0 in that case, which
rewards empty predictions; summaries count these cases separately instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from monai_effseg.metrics.lesions import lesion_detection_metrics, match_lesions
from monai_effseg.metrics.surface import as_label_array, crop_to_union, dice, distance_summary, surface_distances

__all__ = ["LITS_REGIONS", "lits_region_metrics", "lits_case_metrics"]

LITS_REGIONS = {"liver": lambda seg: seg >= 1, "tumor": lambda seg: seg == 2}


def lits_region_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], lits_script_assd: bool = True
) -> dict[str, float]:
    """All LiTS overlap, volume and surface metrics of one binary region (see the module docstring)."""
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    inter = int(np.count_nonzero(pred & gt))
    union = n_pred + n_gt - inter
    out: dict[str, float] = {
        "vol_pred": n_pred,
        "vol_gt": n_gt,
        "intersection": inter,
        "dice": dice(pred, gt),
        "voe": 1.0 - inter / union if union else 0.0,
        "rvd": (n_pred - n_gt) / n_gt if n_gt else np.nan,
        "rvd_lits_script": (n_gt - n_pred) / n_pred if n_pred else np.nan,
    }
    out.update(distance_summary(surface_distances(pred, gt, spacing)))
    if lits_script_assd:
        lits = surface_distances(pred, gt, spacing, connectivity=2)
        out["assd_lits_script"] = distance_summary(lits)["assd"]
    return out


def lits_case_metrics(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    lesion_connectivity: int | None = None,
    lits_script_assd: bool = True,
) -> dict[str, float]:
    """LiTS metrics of one case: ``{f"{region}_{metric}": ...}`` for liver and tumor, plus lesion detection.

    Args:
        pred: predicted label map (0 background, 1 liver, 2 tumour), spatial dims only.
        gt: reference label map on the same grid.
        spacing: voxel size in mm in array order.
        lesion_connectivity: connectivity of the lesion components (``None``: full, 26 in 3D).
        lits_script_assd: also compute the LiTS-script 18-connectivity ASSD (one more distance pass).

    Lesion keys (tumour label, Tustumi's section 3.2.1, see :mod:`monai_effseg.metrics.lesions`):
    ``lesions_reference``, ``lesion_{tp,fp,recall,precision}_{iou_gt0,iou50}``, ``lesions_{small,medium,large}``,
    ``lesion_dice_{small,medium,large}`` and ``lesion_dice_sum_*`` for pooling.
    """
    pred, gt = as_label_array(pred), as_label_array(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} entries for a {gt.ndim}-D label map")
    pred, gt = crop_to_union(pred, gt)
    out: dict[str, float] = {}
    for name, region in LITS_REGIONS.items():
        for key, value in lits_region_metrics(region(pred), region(gt), spacing, lits_script_assd).items():
            out[f"{name}_{key}"] = value
    out.update(lesion_detection_metrics(match_lesions(pred == 2, gt == 2, lesion_connectivity)))
    return out
