"""Challenge-exact evaluation: KiTS19/KiTS21 regions with Dice and surface Dice, the LiTS suite, lesion detection.

See ``docs/evaluation.md`` for the conventions of every metric and the official scripts they follow.
"""

from monai_effseg.metrics.cumulative import KiTSMetric, LiTSMetric, to_label_map
from monai_effseg.metrics.generalized import generalized_dice_surface_score
from monai_effseg.metrics.handlers import KiTSDiceHandler, LiTSDiceHandler
from monai_effseg.metrics.kits import KITS21_SD_TOLERANCES_MM, KITS_PROTOCOLS, Region, kits_case_metrics, kits_regions
from monai_effseg.metrics.lesions import LesionMatch, lesion_detection_metrics, match_lesions, size_group
from monai_effseg.metrics.lits import LITS_REGIONS, lits_case_metrics, lits_region_metrics
from monai_effseg.metrics.report import evaluate_datalist, evaluate_folders
from monai_effseg.metrics.surface import crop_to_union, dice, distance_summary, surface_dice, surface_distances

__all__ = [
    "KITS21_SD_TOLERANCES_MM",
    "KITS_PROTOCOLS",
    "LITS_REGIONS",
    "KiTSDiceHandler",
    "KiTSMetric",
    "LesionMatch",
    "LiTSDiceHandler",
    "LiTSMetric",
    "Region",
    "crop_to_union",
    "dice",
    "distance_summary",
    "evaluate_datalist",
    "evaluate_folders",
    "generalized_dice_surface_score",
    "kits_case_metrics",
    "kits_regions",
    "lesion_detection_metrics",
    "lits_case_metrics",
    "lits_region_metrics",
    "match_lesions",
    "size_group",
    "surface_dice",
    "surface_distances",
    "to_label_map",
]
