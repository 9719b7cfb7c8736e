"""Two-stage liver-then-tumour inference on whole CT volumes (Tustumi, "Automatic Liver Tumor Segmentation from CT
Images Based on 2D and 3D Deep Neural Networks", thesis, 2020, sections 3.1.6-3.1.8).

1. Stage 1 (the liver network) on every slice; liver = probability > ``liver_threshold``; keep its largest connected
   component ("classify it as the liver, thus eliminating most of the small false positives").
2. Combine the volume with that liver mask (``"mask"`` or ``"add"``, section 3.1.7) and run stage 2 (the tumour
   network) on every slice; tumour = probability > ``tumour_threshold``, inside the liver.
3. Drop every tumour component whose highest probability is below ``component_threshold`` (section 3.1.8).

The inferer takes the bundle's ``network``: a :class:`~monai_effseg.nets.LiverTumourUNet` (eager or TorchScript), whose
``liver`` and ``tumour`` submodules are the two stages, or any module with those two attributes. This is how MONAI
Label's ``monaibundle`` app serves the pipeline: it builds ``network_def``, loads ``models/model.pt`` (one checkpoint
holding both stages) and calls ``inferer(image, network)``.

The result is the one-hot (background, liver, tumour) label map as float, so ``Invertd`` can resample it to the input
grid (linear interpolation of the indicator = the thesis' upsampling of the masks, section 4.1.1) before the argmax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from monai_effseg.inferers.slices import SliceStackInferer
from monai_effseg.nets.lite_unet import COMBINE_MODES, combine_liver_mask
from monai_effseg.transforms.postprocess import KeepLargestComponent, remove_low_probability_components

__all__ = ["LiverTumourInferer"]


class LiverTumourInferer(Inferer):
    """Stage 1 -> largest liver component -> combination -> stage 2 -> tumour component filter.

    Args:
        spatial_dims, in_slices, out_slices, batch_size, slice_axis, channels_last: of the two stages' slab networks,
            see :class:`~monai_effseg.inferers.SliceStackInferer`.
        combine: ``"mask"`` or ``"add"``; must be what the tumour stage was trained with.
        liver_threshold, tumour_threshold: probability thresholds of the two stages.
        component_threshold: a tumour component survives if its peak probability reaches this (>= the tumour
            threshold; the thesis gives no value).
        keep_largest_liver: keep only the largest liver component.
        amp, amp_dtype: autocast of both stages' network calls, see :class:`~monai_effseg.inferers.SliceStackInferer`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_slices: int | None = None,
        out_slices: int | None = None,
        batch_size: int = 8,
        combine: str = "mask",
        liver_threshold: float = 0.5,
        tumour_threshold: float = 0.5,
        component_threshold: float = 0.8,
        keep_largest_liver: bool = True,
        slice_axis: int = -1,
        channels_last: bool = False,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
        if component_threshold < tumour_threshold:
            raise ValueError("component_threshold below tumour_threshold would keep components it cannot see")
        self.slices = SliceStackInferer(spatial_dims, in_slices, out_slices, batch_size, slice_axis, channels_last,
                                        amp=amp, amp_dtype=amp_dtype)  # fmt: skip
        self.combine = combine
        self.liver_threshold = liver_threshold
        self.tumour_threshold = tumour_threshold
        self.component_threshold = component_threshold
        self.keep_largest = KeepLargestComponent(applied_labels=(1,)) if keep_largest_liver else None

    def probabilities(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor]) -> torch.Tensor:
        """Foreground probability ``(B, 1, *spatial)`` of a two-class stage network over the whole volume."""
        return torch.softmax(self.slices(inputs, network).float(), dim=1)[:, 1:2]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        liver_net, tumour_net = getattr(network, "liver", None), getattr(network, "tumour", None)
        if liver_net is None or tumour_net is None:
            raise TypeError("LiverTumourInferer needs a network with 'liver' and 'tumour' stages (LiverTumourUNet)")
        liver = self.probabilities(inputs, liver_net) > self.liver_threshold
        if self.keep_largest is not None:
            liver = torch.stack([self.keep_largest(item.to(torch.uint8)) for item in liver]).bool()
        p_tumour = self.probabilities(combine_liver_mask(inputs, liver, self.combine), tumour_net) * liver
        tumour = self._filter_tumours(p_tumour)
        labels = liver.long() + tumour.long()
        return torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1).to(inputs.dtype)

    def _filter_tumours(self, p_tumour: torch.Tensor) -> torch.Tensor:
        """Tumour = probability > threshold, minus components whose peak probability is below the component
        threshold."""
        out = []
        for prob in p_tumour.detach().cpu().numpy():
            seg = (prob[0] > self.tumour_threshold).astype(np.uint8)
            kept = remove_low_probability_components(seg, prob[0], 1, self.component_threshold)
            out.append(torch.from_numpy(kept.astype(bool))[None])
        return torch.stack(out).to(p_tumour.device)
