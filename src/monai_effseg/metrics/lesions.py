"""Lesion-level detection and size-grouped Dice (Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on
2D and 3D Deep Neural Networks", thesis, 2020, sections 3.2.1 and 4.1.1).

Correspondence, as the thesis describes it (section 3.2.1):

1. label the reference and the predicted lesions with connected components;
2. reference lesions bridged by one predicted lesion get the same label (many-to-many becomes many-to-one);
3. predicted lesions overlapping the same (merged) reference lesion are combined (one-to-one);
4. a merged reference lesion counts as many detections as the reference lesions it merged, so the number of
   reference lesions does not change.

A reference lesion is detected when the IoU with its combined prediction is > 0 or >= 0.5 (both reported).
The thesis' equations (3.1)-(3.2) swap the usual names (its "FN" are unmatched predictions and its "Recall"
divides by them); we use the standard meaning:

- recall = detected reference lesions / reference lesions;
- precision = TP / (TP + FP), TP being the detected reference lesions as above and FP the predicted objects
  that are not a detection at that threshold (unmatched predicted components, plus combined predictions whose
  IoU misses the threshold).

Size groups (Table 4.1) classify each reference tumour instance by its voxel count: small < 1000,
medium 1000-10000 (inclusive), large > 10000. The group Dice is the mean over the group's instances of the
Dice between the (merged) reference lesion and its combined prediction; a missed lesion scores 0 and false
positives, having no reference size, are not part of any group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LesionMatch", "match_lesions", "SIZE_GROUPS", "size_group", "lesion_detection_metrics"]

SIZE_GROUPS = ("small", "medium", "large")
IOU_THRESHOLDS = {"iou_gt0": 0.0, "iou50": 0.5}


def size_group(voxels: int) -> str:
    """Tumour size group of Tustumi's Table 4.1 (voxel counts)."""
    if voxels < 1000:
        return "small"
    return "medium" if voxels <= 10000 else "large"


@dataclass
class LesionMatch:
    """One-to-one correspondence between merged reference lesions and combined predicted lesions of a case.

    Arrays are indexed by merged reference lesion: ``n_merged`` original lesions merged into it, voxel counts of
    the reference, of the combined prediction and of their intersection. ``n_unmatched_pred`` counts predicted
    components that touch no reference lesion.
    """

    n_merged: np.ndarray
    ref_voxels: np.ndarray
    pred_voxels: np.ndarray
    inter_voxels: np.ndarray
    n_unmatched_pred: int

    @property
    def n_reference(self) -> int:
        return int(self.n_merged.sum())

    @property
    def iou(self) -> np.ndarray:
        union = self.ref_voxels + self.pred_voxels - self.inter_voxels
        return self.inter_voxels / np.maximum(union, 1)

    @property
    def dice(self) -> np.ndarray:
        return 2.0 * self.inter_voxels / np.maximum(self.ref_voxels + self.pred_voxels, 1)

    def counts(self, threshold: float) -> tuple[int, int]:
        """(TP, FP) at an IoU threshold: threshold 0 means IoU > 0, any other value IoU >= threshold."""
        detected = self.iou > 0 if threshold == 0 else self.iou >= threshold
        tp = int(self.n_merged[detected].sum())
        missed_predictions = int(np.count_nonzero(~detected & (self.pred_voxels > 0)))
        return tp, self.n_unmatched_pred + missed_predictions


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def match_lesions(pred: np.ndarray, gt: np.ndarray, connectivity: int | None = None) -> LesionMatch:
    """Build Tustumi's lesion correspondence between binary lesion masks ``pred`` and ``gt``.

    ``connectivity`` is the number of orthogonal hops that make two voxels neighbours (``None``: full, i.e.
    26-connectivity in 3D).
    """
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    structure = ndimage.generate_binary_structure(gt.ndim, connectivity or gt.ndim)
    ref_lab, n_ref = ndimage.label(gt, structure)
    pred_lab, n_pred = ndimage.label(pred, structure)

    both = (ref_lab > 0) & (pred_lab > 0)
    pairs = np.unique(np.stack([ref_lab[both], pred_lab[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    # Union-find over reference lesions: one predicted lesion touching several references merges them.
    parent = np.arange(n_ref + 1)
    first_ref_of_pred: dict[int, int] = {}
    for r, p in pairs.T:
        if p in first_ref_of_pred:
            a, b = _find(parent, first_ref_of_pred[p]), _find(parent, int(r))
            parent[max(a, b)] = min(a, b)
        else:
            first_ref_of_pred[int(p)] = int(r)
    roots = np.array([_find(parent, i) for i in range(n_ref + 1)])
    _, group_of_ref = np.unique(roots[1:], return_inverse=True)  # reference lesion id - 1 -> merged index
    n_groups = int(group_of_ref.max()) + 1 if n_ref else 0

    group_lut = np.concatenate([[-1], group_of_ref])  # reference label -> merged index (-1 background)
    ref_sizes = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    pred_group = np.full(n_pred + 1, -1)
    for r, p in pairs.T:
        pred_group[p] = group_lut[r]

    n_merged = np.bincount(group_of_ref, minlength=n_groups)
    ref_voxels = np.bincount(group_of_ref, weights=ref_sizes[1:], minlength=n_groups)
    matched = pred_group[1:] >= 0
    pred_voxels = np.bincount(pred_group[1:][matched], weights=pred_sizes[1:][matched], minlength=n_groups)
    inter_voxels = np.bincount(group_lut[ref_lab[both]], minlength=n_groups)
    return LesionMatch(
        n_merged=n_merged.astype(np.int64),
        ref_voxels=ref_voxels.astype(np.int64),
        pred_voxels=pred_voxels.astype(np.int64),
        inter_voxels=inter_voxels.astype(np.int64),
        n_unmatched_pred=int(np.count_nonzero(~matched)),
    )


def lesion_detection_metrics(match: LesionMatch) -> dict[str, float]:
    """Per-case detection counts, recall/precision at both IoU rules, and size-group Dice sums.

    Counts are returned alongside the ratios so a dataset summary can pool them (sum TP / sum reference).
    Ratios with an empty denominator are NaN.
    """
    out: dict[str, float] = {"lesions_reference": match.n_reference}
    for key, threshold in IOU_THRESHOLDS.items():
        tp, fp = match.counts(threshold)
        out[f"lesion_tp_{key}"] = tp
        out[f"lesion_fp_{key}"] = fp
        out[f"lesion_recall_{key}"] = tp / match.n_reference if match.n_reference else np.nan
        out[f"lesion_precision_{key}"] = tp / (tp + fp) if tp + fp else np.nan
    groups = np.array([size_group(int(v)) for v in match.ref_voxels])
    dice = match.dice
    for name in SIZE_GROUPS:
        members = groups == name
        n = int(np.count_nonzero(members))
        out[f"lesions_{name}"] = n
        out[f"lesion_dice_sum_{name}"] = float(dice[members].sum())
        out[f"lesion_dice_{name}"] = float(dice[members].mean()) if n else np.nan
    return out
