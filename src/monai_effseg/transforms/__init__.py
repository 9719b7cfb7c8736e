"""Transforms: CT preprocessing from a dataset fingerprint, nnU-Net augmentation, prediction saving and
post-processing."""

from monai_effseg.transforms.augment import nnunet_augmentation
from monai_effseg.transforms.ct import CTNormalized, ct_preprocessing, fixed_ct_normalize
from monai_effseg.transforms.postprocess import (
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
