"""Transforms: CT preprocessing from a dataset fingerprint, nnU-Net augmentation, prediction saving and
post-processing."""

from monai_effseg.transforms.augment import nnunet_augmentation
from monai_effseg.transforms.crop import FOREGROUND_SAMPLINGS, ForegroundOversampledCropd, foreground_crop
from monai_effseg.transforms.ct import CTNormalized, ct_preprocessing, fixed_ct_normalize
from monai_effseg.transforms.postprocess import (
    ChannelArgmaxd,
    KeepKidneyPair,
    KeepKidneyPaird,
    KeepLargestComponent,
    KeepLargestComponentd,
    RemoveLowProbabilityComponents,
    RemoveLowProbabilityComponentsd,
    keep_kidney_pair,
    remove_low_probability_components,
)
from monai_effseg.transforms.save import SavePredictiond, case_id_from_path

__all__ = [
    "FOREGROUND_SAMPLINGS",
    "ForegroundOversampledCropd",
    "foreground_crop",
    "ChannelArgmaxd",
    "CTNormalized",
    "KeepKidneyPair",
    "KeepKidneyPaird",
    "KeepLargestComponent",
    "KeepLargestComponentd",
    "RemoveLowProbabilityComponents",
    "RemoveLowProbabilityComponentsd",
    "keep_kidney_pair",
    "remove_low_probability_components",
    "SavePredictiond",
    "case_id_from_path",
    "ct_preprocessing",
    "fixed_ct_normalize",
    "nnunet_augmentation",
]
from monai_effseg.transforms.cascade import FixedBoxCropd, RandFixedBoxCropd, residual_unet_augmentation, stage2_box_mm  # noqa: E402

__all__ += ["FixedBoxCropd", "RandFixedBoxCropd", "residual_unet_augmentation", "stage2_box_mm"]
from monai_effseg.transforms.lits import (  # noqa: E402
    CombineLiverMaskd,
    SlabToChannelsd,
    StageLabeld,
    lits_augmentation,
    lits_preprocessing,
    lits_train_transforms,
    lits_validation_transforms,
)

__all__ += [
    "CombineLiverMaskd",
    "SlabToChannelsd",
    "StageLabeld",
    "lits_augmentation",
    "lits_preprocessing",
    "lits_train_transforms",
    "lits_validation_transforms",
]
from monai_effseg.transforms.spatial import AxisAlignedSplineResample, SafeSpacingd  # noqa: E402

__all__ += ["AxisAlignedSplineResample", "SafeSpacingd"]
from monai_effseg.transforms.tumour_paste import TumourCopyPasted  # noqa: E402

__all__ += ["TumourCopyPasted"]
