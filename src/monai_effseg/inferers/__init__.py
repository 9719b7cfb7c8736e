"""Inferers: sliding window with mirror TTA, and the papers' multi-stage / slice-stack inference."""

from monai_effseg.inferers.sliding_window import MirroredPredictor, SlidingWindowMirrorInferer, mirror_combinations

__all__ = ["MirroredPredictor", "SlidingWindowMirrorInferer", "mirror_combinations"]
