"""MONAI cumulative metrics for validation during training (KiTS regions, LiTS regions).

Both take ``y_pred`` and ``y`` as label maps ``(B, 1, ...)`` or as one-hot / probability maps ``(B, C, ...)``
(reduced with argmax), or as lists of channel-first tensors, exactly like MONAI's ``DiceMetric``.
``aggregate()`` returns a dict of per-region means plus ``"mean"`` (the mean of the region Dice values), which
:mod:`monai_effseg.metrics.handlers` turns into an ignite key metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_numpy

from monai_effseg.metrics.kits import kits_case_metrics, kits_regions
from monai_effseg.metrics.lits import LITS_REGIONS
from monai_effseg.metrics.surface import dice

__all__ = ["KiTSMetric", "LiTSMetric", "to_label_map"]


def to_label_map(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, ...)`` one-hot / probabilities -> ``(B, ...)`` labels by argmax; ``(B, 1, ...)`` -> squeeze."""
    if x.ndim < 3:
        raise ValueError(f"expected a batch-first, channel-first tensor (B, C, ...), got shape {tuple(x.shape)}")
    return x[:, 0] if x.shape[1] == 1 else x.argmax(dim=1)


def _batch_spacing(y: torch.Tensor, fixed: Sequence[float] | None, batch: int, ndim: int) -> list[list[float]]:
    """Per-item voxel size: the ``spacing`` argument if given, else the MetaTensor affine, else 1 mm."""
    if fixed is not None:
        return [[float(s) for s in fixed]] * batch
    if isinstance(y, MetaTensor):
        pixdim = y.pixdim
        items = pixdim if isinstance(pixdim, list) else [pixdim] * batch
        return [[float(s) for s in convert_to_numpy(p)[:ndim]] for p in items]
    return [[1.0] * ndim] * batch


class KiTSMetric(CumulativeIterationMetric):
    """Per-case KiTS region Dice (and optionally surface Dice), accumulated over iterations.

    Args:
        protocol: "kits19" (kidney, tumor) or "kits21" (kidney_and_mass, mass, tumor); see
            :func:`monai_effseg.metrics.kits_case_metrics` for the definitions and empty-mask rules.
        include_surface_dice: also compute the surface Dice (DeepMind semantics, KiTS21 tolerances). It needs the
            voxel size: ``spacing``, else the affine of a MetaTensor ``y``, else 1 mm is assumed; it costs ~1 s per
            full-size case on CPU.
        spacing: voxel size in mm of the spatial axes, used for every item (overrides MetaTensor metadata).

    ``aggregate()`` returns ``{f"{region}_dice": mean, [f"{region}_sd": mean,] "mean": mean of the region Dice}``;
    NaN entries (never produced by the KiTS rules, but possible after ``reset`` with no data) are ignored.
    """

    def __init__(
        self, protocol: str = "kits19", include_surface_dice: bool = False, spacing: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.include_surface_dice = include_surface_dice
        self.spacing = spacing
        regions = [r.name for r in kits_regions(protocol)]
        self.keys = [f"{r}_dice" for r in regions] + ([f"{r}_sd" for r in regions] if include_surface_dice else [])
        self.n_regions = len(regions)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("KiTSMetric needs the ground truth y.")
        pred, gt = to_label_map(y_pred), to_label_map(y)
        if pred.shape != gt.shape:
            raise ValueError(f"y_pred and y have different spatial shapes: {tuple(pred.shape)} vs {tuple(gt.shape)}")
        spacings = _batch_spacing(y, self.spacing, pred.shape[0], pred.ndim - 1)
        rows = []
        for p, g, sp in zip(convert_to_numpy(pred), convert_to_numpy(gt), spacings):
            values = kits_case_metrics(p, g, sp, self.protocol, include_surface_dice=self.include_surface_dice)
            rows.append([values[k] for k in self.keys])
        return torch.as_tensor(rows, dtype=torch.float64, device=y_pred.device)

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            return {**{k: float("nan") for k in self.keys}, "mean": float("nan")}
        means = torch.nanmean(buffer.double(), dim=0)
        out = {k: float(v) for k, v in zip(self.keys, means)}
        out["mean"] = float(torch.nanmean(means[: self.n_regions]))
        return out


class LiTSMetric(CumulativeIterationMetric):
    """Per-case liver (label >= 1) and tumour (label 2) Dice plus the pooled "global" Dice of LiTS.

    ``aggregate()`` returns ``liver_dice``, ``tumor_dice`` (means over cases, both-empty = 1), ``liver_dice_global``,
    ``tumor_dice_global`` (voxels pooled over all cases, LiTS "Dice global") and ``"mean"`` (mean of the two per-case
    Dice values).
    """

    regions = tuple(LITS_REGIONS)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("LiTSMetric needs the ground truth y.")
        pred, gt = to_label_map(y_pred), to_label_map(y)
        if pred.shape != gt.shape:
            raise ValueError(f"y_pred and y have different spatial shapes: {tuple(pred.shape)} vs {tuple(gt.shape)}")
        rows = []
        for p, g in zip(convert_to_numpy(pred), convert_to_numpy(gt)):
            row = []
            for region in LITS_REGIONS.values():
                rp, rg = region(np.rint(p)), region(np.rint(g))
                row += [dice(rp, rg), np.count_nonzero(rp & rg), np.count_nonzero(rp) + np.count_nonzero(rg)]
            rows.append(row)
        return torch.as_tensor(rows, dtype=torch.float64, device=y_pred.device)

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            empty = {f"{r}_{k}": float("nan") for r in self.regions for k in ("dice", "dice_global")}
            return {**empty, "mean": float("nan")}
        buffer = buffer.double()
        out: dict[str, float] = {}
        for i, region in enumerate(self.regions):
            inter, total = buffer[:, 3 * i + 1].sum(), buffer[:, 3 * i + 2].sum()
            out[f"{region}_dice"] = float(torch.nanmean(buffer[:, 3 * i]))
            out[f"{region}_dice_global"] = float(2 * inter / total) if total > 0 else 1.0
        out["mean"] = float(np.mean([out[f"{r}_dice"] for r in self.regions]))
        return out
