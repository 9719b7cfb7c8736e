"""Hao, "Deep Learning-Based Cascade 3D Kidney Segmentation Method" (MSc thesis, University of Melbourne, 2024),
section 3.3: the average of generalized Dice and surface Dice.

The thesis calls this combination its "evaluation matrix": "By averaging these two Dice scores, the final Dice
score provides a balanced assessment, guiding the model's improvement" (section 3.3); its conclusion (5.1) says the
same combination was used "as the loss function". Neither the tolerance nor the surface Dice variant is given.
This module is the metric (hard masks, model selection); :class:`monai_effseg.losses.GeneralizedSurfaceDiceLoss`
is a differentiable surrogate for training.

Choices (documented in docs/evaluation.md): classes are the labels themselves (kidney 1, tumour 2), the
generalized Dice is Sudre et al.'s (square weights, MONAI ``compute_generalized_dice``), the surface Dice has
DeepMind semantics with the KiTS21 tolerances of the matching region, averaged over classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_generalized_dice

from monai_effseg.metrics.kits import KITS21_SD_TOLERANCES_MM
from monai_effseg.metrics.surface import as_label_array, crop_to_union, surface_dice

__all__ = ["generalized_dice_surface_score"]


def generalized_dice_surface_score(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    labels: Sequence[int] = (1, 2),
    tolerances_mm: Sequence[float] = (KITS21_SD_TOLERANCES_MM["kidney_and_mass"], KITS21_SD_TOLERANCES_MM["tumor"]),
) -> dict[str, float]:
    """``{"generalized_dice", "surface_dice", "score"}`` of one case, ``score`` = their mean (Hao's sec. 3.3)."""
    if len(labels) != len(tolerances_mm):
        raise ValueError(f"one tolerance per label needed: labels {tuple(labels)}, tolerances {tuple(tolerances_mm)}")
    pred, gt = crop_to_union(as_label_array(pred), as_label_array(gt))
    one_hot = [torch.from_numpy(np.stack([a == lab for lab in labels])[None].astype(np.float32)) for a in (pred, gt)]
    gdc = float(compute_generalized_dice(one_hot[0], one_hot[1], include_background=True, sum_over_classes=True))
    sd = float(np.mean([surface_dice(pred == lab, gt == lab, spacing, tol) for lab, tol in zip(labels, tolerances_mm)]))
    return {"generalized_dice": gdc, "surface_dice": sd, "score": 0.5 * (gdc + sd)}
