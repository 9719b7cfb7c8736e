"""Exponential-logarithmic soft Dice + weighted cross-entropy of MSS U-Net (Zhao, Jiang, Pena Queralta,
Westerlund, "MSS U-Net", Informatics in Medicine Unlocked 2020, eq. 5-8).

Per output level: ``L = sum_k w_k (-ln SD_k)^gamma + CE_weighted`` with, in the paper, k in {kidney, tumour},
w = (0.4, 0.6), gamma = 0.3 and CE class weights (0.28, 0.28, 0.44) for (background, kidney, tumour).
The authors' code (LINGYUNFDU/MSSU-Net ``training/loss_functions/dice_loss.py``, nnU-Net v1 based) fixes what
the paper leaves open, and is our default:

- SD_k is a *batch* soft Dice (sums over batch and space) of the softmax probabilities of class k alone
  (kidney = label 1, not kidney + tumour), ``(2 sum pg + s) / (sum p + sum g + s)`` with s = 1e-5;
  eq. 6-7 of the paper square the denominator terms instead (``squared_pred=True``);
- CE is ``torch.nn.CrossEntropyLoss(weight=...)``: mean over voxels normalised by the summed target weights;
- the two terms are added 1:1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks import one_hot
from torch.nn.modules.loss import _Loss

__all__ = ["ExpLogDiceCELoss"]


class ExpLogDiceCELoss(_Loss):
    """Exponential-logarithmic soft Dice plus class-weighted cross-entropy (MSS U-Net, Zhao et al. 2020).

    Args:
        dice_classes: class indices that get a Dice term (default kidney 1, tumour 2).
        dice_weights: multiplier of each Dice term (paper: 0.4 kidney, 0.6 tumour).
        gamma: exponent of ``-ln SD`` (paper: 0.3).
        ce_weight: cross-entropy class weights, one per output channel (paper: 0.28, 0.28, 0.44); ``None`` = 1.
        smooth: added to numerator and denominator of the soft Dice (authors' code: 1e-5).
        batch: soft Dice over the whole batch (authors' code) instead of per sample, then averaged.
        squared_pred: denominator ``sum p^2 + sum g^2`` as printed in eq. 6-7 (the code uses ``sum p + sum g``).
        lambda_dice: weight of the Dice part.
        lambda_ce: weight of the cross-entropy part.

    ``input`` are logits ``(B, C, ...)``; ``target`` is a label map ``(B, 1, ...)`` (or ``(B, ...)``), as with
    MONAI's ``to_onehot_y=True`` convention. Float label maps are accepted (MONAI loads labels as float).
    """

    def __init__(
        self,
        dice_classes: Sequence[int] = (1, 2),
        dice_weights: Sequence[float] = (0.4, 0.6),
        gamma: float = 0.3,
        ce_weight: Sequence[float] | None = (0.28, 0.28, 0.44),
        smooth: float = 1e-5,
        batch: bool = True,
        squared_pred: bool = False,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__()
        if len(dice_classes) != len(dice_weights):
            raise ValueError(
                f"dice_classes {tuple(dice_classes)} and dice_weights {tuple(dice_weights)} differ in length"
            )
        self.dice_classes = list(dice_classes)
        self.gamma = gamma
        self.smooth = smooth
        self.batch = batch
        self.squared_pred = squared_pred
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce
        self.register_buffer("dice_weights", torch.as_tensor(dice_weights, dtype=torch.float64), persistent=False)
        self.ce_weight: torch.Tensor | None
        if ce_weight is None:
            self.ce_weight = None
        else:
            self.register_buffer("ce_weight", torch.as_tensor(ce_weight, dtype=torch.float64), persistent=False)

    def soft_dice(self, probs: torch.Tensor, target_onehot: torch.Tensor) -> torch.Tensor:
        """Soft Dice per Dice class: shape ``(K,)`` with ``batch=True``, else ``(B, K)``."""
        p, g = probs[:, self.dice_classes], target_onehot[:, self.dice_classes]
        axes = [0, *range(2, p.ndim)] if self.batch else list(range(2, p.ndim))
        intersection = (p * g).sum(axes)
        if self.squared_pred:
            denominator = (p * p).sum(axes) + (g * g).sum(axes)
        else:
            denominator = p.sum(axes) + g.sum(axes)
        return (2 * intersection + self.smooth) / (denominator + self.smooth)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n_classes = input.shape[1]
        if target.ndim == input.ndim - 1:
            target = target.unsqueeze(1)
        if target.shape[1] != 1 or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"target must be a label map (B, 1, ...) matching input {tuple(input.shape)}, got {tuple(target.shape)}"
            )
        if self.ce_weight is not None and len(self.ce_weight) != n_classes:
            raise ValueError(f"ce_weight has {len(self.ce_weight)} entries for {n_classes} output channels")
        labels = target.round().long() if target.is_floating_point() else target.long()
        probs = torch.softmax(input, dim=1)
        dice = self.soft_dice(probs, one_hot(labels, n_classes, dtype=input.dtype))
        # -ln(SD) is 0 for a perfect (saturated) prediction, where x**gamma has an infinite derivative: clamp it.
        explog = torch.clamp(-torch.log(dice), min=1e-12) ** self.gamma
        dice_term = (explog * self.dice_weights.to(explog)).sum(-1).mean()
        weight = None if self.ce_weight is None else self.ce_weight.to(input)
        ce = F.cross_entropy(input, labels[:, 0], weight=weight)
        return self.lambda_dice * dice_term + self.lambda_ce * ce
