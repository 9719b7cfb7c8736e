"""Losses: MSS U-Net's exponential-logarithmic Dice + weighted CE, weighted deep supervision, and the
generalized Dice + surface Dice combination of Hao's cascade thesis."""

from monai_effseg.losses.deep_supervision import (
    MSS_CODE_DS_WEIGHTS,
    MSS_PAPER_DS_WEIGHTS,
    WeightedDeepSupervisionLoss,
    deep_supervision_loss,
    nnunet_deep_supervision_weights,
)
from monai_effseg.losses.explog import ExpLogDiceCELoss
from monai_effseg.losses.surface import GeneralizedSurfaceDiceLoss, soft_boundary, soft_surface_dice

__all__ = [
    "MSS_CODE_DS_WEIGHTS",
    "MSS_PAPER_DS_WEIGHTS",
    "ExpLogDiceCELoss",
    "GeneralizedSurfaceDiceLoss",
    "WeightedDeepSupervisionLoss",
    "deep_supervision_loss",
    "nnunet_deep_supervision_weights",
    "soft_boundary",
    "soft_surface_dice",
]
