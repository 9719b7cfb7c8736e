"""Inferers: sliding window with mirror TTA, and the papers' multi-stage / slice-stack inference."""

from monai_effseg.inferers.sliding_window import MirroredPredictor, SlidingWindowMirrorInferer, mirror_combinations

__all__ = ["MirroredPredictor", "SlidingWindowMirrorInferer", "mirror_combinations"]
from monai_effseg.inferers.cascade import CascadeInferer, Stage1Predictiond  # noqa: E402

__all__ += ["CascadeInferer", "Stage1Predictiond"]
from monai_effseg.inferers.liver_tumour import LiverTumourInferer  # noqa: E402
from monai_effseg.inferers.slices import SliceStackInferer  # noqa: E402

__all__ += ["SliceStackInferer", "LiverTumourInferer"]
from monai_effseg.inferers.coarse_to_fine import (  # noqa: E402
    CoarseToFineInferer,
    box_fraction,
    kidney_boxes,
    load_localizer,
    localizer_path,
)

__all__ += ["CoarseToFineInferer", "box_fraction", "kidney_boxes", "load_localizer", "localizer_path"]
