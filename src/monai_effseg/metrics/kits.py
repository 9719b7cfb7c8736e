"""KiTS19 and KiTS21 evaluation protocols (hierarchical regions, Dice, surface Dice).

References:
    - KiTS21 official evaluation, ``neheller/kits21`` ``kits21/evaluation/metrics.py`` and
      ``kits21/configuration/labels.py``: hierarchical evaluation classes (HECs) kidney_and_mass = {1,2,3},
      mass = {2,3}, tumor = {2}; Dice (both empty = 1) and surface Dice (DeepMind ``surface-distance``, both
      empty = 1, one empty = 0) at the final ``HEC_SD_TOLERANCES_MM``.
    - KiTS19 official ``starter_code/evaluation.py``: kidney = label > 0, tumour = label 2 (the script writes
      label > 1, identical on KiTS19's {0, 1, 2}); the leaderboard composite is the mean of the two Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monai_effseg.metrics.surface import as_label_array, crop_to_union, dice, surface_dice

__all__ = ["Region", "KITS_PROTOCOLS", "KITS21_SD_TOLERANCES_MM", "kits_regions", "kits_case_metrics"]

KITS21_SD_TOLERANCES_MM = {
    "kidney_and_mass": 1.0330772532390826,
    "mass": 1.1328796488598762,
    "tumor": 1.1498198361434828,
}


@dataclass(frozen=True)
class Region:
    """An evaluation region: the union of ``labels`` (``None``: every label > 0) and its surface tolerance."""

    name: str
    labels: tuple[int, ...] | None
    tolerance_mm: float

    def mask(self, seg: np.ndarray) -> np.ndarray:
        if self.labels is None:
            return seg > 0
        if len(self.labels) == 1:
            return seg == self.labels[0]
        return np.isin(seg, self.labels)


KITS_PROTOCOLS: dict[str, tuple[Region, ...]] = {
    "kits21": (
        Region("kidney_and_mass", (1, 2, 3), KITS21_SD_TOLERANCES_MM["kidney_and_mass"]),
        Region("mass", (2, 3), KITS21_SD_TOLERANCES_MM["mass"]),
        Region("tumor", (2,), KITS21_SD_TOLERANCES_MM["tumor"]),
    ),
    # KiTS19 had no surface Dice; we report it with the KiTS21 tolerances of the matching HEC.
    "kits19": (
        Region("kidney", None, KITS21_SD_TOLERANCES_MM["kidney_and_mass"]),
        Region("tumor", (2,), KITS21_SD_TOLERANCES_MM["tumor"]),
    ),
}


def kits_regions(protocol: str) -> tuple[Region, ...]:
    """The evaluation regions of ``protocol`` ("kits19" or "kits21")."""
    try:
        return KITS_PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown KiTS protocol {protocol!r}; expected one of {sorted(KITS_PROTOCOLS)}") from None


def kits_case_metrics(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    protocol: str = "kits21",
    include_surface_dice: bool = True,
) -> dict[str, float]:
    """Dice and surface Dice of one case for every region of a KiTS protocol.

    Args:
        pred: predicted label map (spatial dims only, no channel), same shape and voxel grid as ``gt``.
        gt: reference label map (KiTS labels: 1 kidney, 2 tumour, 3 cyst).
        spacing: voxel size in mm in array order (for NIfTI: ``header.get_zooms()``).
        protocol: "kits21" (regions kidney_and_mass, mass, tumor) or "kits19" (kidney, tumor, plus "composite").
        include_surface_dice: skip the surface Dice (e.g. for fast validation during training).

    Returns:
        ``{f"{region}_dice": ..., f"{region}_sd": ...}`` and, for kits19, ``"composite"`` = mean of the two Dice.
        Empty rules follow KiTS21: both masks empty gives 1 for Dice and surface Dice, one empty gives 0.
    """
    regions = kits_regions(protocol)
    pred, gt = as_label_array(pred), as_label_array(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} entries for a {gt.ndim}-D label map")
    # Every region is a subset of label > 0: one crop to the foreground union serves all of them exactly.
    pred, gt = crop_to_union(pred, gt)
    out: dict[str, float] = {}
    for region in regions:
        p, g = region.mask(pred), region.mask(gt)
        out[f"{region.name}_dice"] = dice(p, g)
        if include_surface_dice:
            out[f"{region.name}_sd"] = surface_dice(p, g, spacing, region.tolerance_mm)
    if protocol == "kits19":
        out["composite"] = 0.5 * (out["kidney_dice"] + out["tumor_dice"])
    return out
