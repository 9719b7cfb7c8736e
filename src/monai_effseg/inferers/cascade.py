"""Whole-CT inference of the two-stage cascade of Hao, "Deep Learning-Based Cascade 3D Kidney Segmentation Method"
(MSc thesis, University of Melbourne, 2024), section 3.1, Figure 3.1.

Stage 1: crop a fixed-size ROI (around the body), downsample, segment with a sliding window, upsample back.
Stage 2: crop a fixed-size box centred on stage 1's label from the CT and from stage 1's segmentation, stack them
as two channels, segment with a sliding window, paste the box back (background elsewhere: the box covers every
training case's foreground by construction).

MONAI Label's ``monaibundle`` app calls ``inferer(image, network)`` with the bundle's ``network`` loaded from
``models/model.pt``. The bundle's network is a :class:`~monai_effseg.nets.UNetCascade`, so that one checkpoint
holds both stages and this inferer reads ``network.stage1`` and ``network.stage2``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform, Zoom
from monai.utils import convert_to_dst_type
from torch import nn

from monai_effseg.inferers.sliding_window import SlidingWindowMirrorInferer
from monai_effseg.nets.cascade import cascade_stages
from monai_effseg.transforms.cascade import (
    body_centre,
    box_start,
    crop_box,
    foreground_centre,
    mm_to_voxels,
    spacing_of,
)
from monai_effseg.transforms.postprocess import keep_kidney_pair

__all__ = ["CascadeInferer", "Stage1Predictiond"]

logger = logging.getLogger(__name__)


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (networks and sliding windows need no metadata)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _background(num_classes: int, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """Probabilities ``(C, *shape)`` that say "background" everywhere."""
    out = torch.zeros((num_classes, *shape), dtype=torch.float32, device=like.device)
    out[0] = 1.0
    return out


def _paste(target: torch.Tensor, patch: torch.Tensor, start: Sequence[int]) -> None:
    """Write the part of ``patch`` (C, *box) that lies inside ``target`` (C, *volume) at ``start``."""
    src, dst = [slice(None)], [slice(None)]
    for s, z, n in zip(start, patch.shape[1:], target.shape[1:]):
        lo, hi = max(s, 0), min(s + z, n)
        src.append(slice(lo - s, hi - s))
        dst.append(slice(lo, hi))
    target[tuple(dst)] = patch[tuple(src)]


class CascadeInferer(Inferer):
    """Two-stage cascade inference on whole preprocessed CTs; returns class probabilities at the input's grid.

    Args:
        stage1_patch: sliding-window patch of stage 1 (on the downsampled ROI).
        stage2_patch: sliding-window patch of stage 2 (on the stage-2 box).
        stage2_box_mm: stage-2 box per axis in mm, e.g. :func:`monai_effseg.transforms.cascade.stage2_box_mm`.
        stage1_roi_mm: stage 1's fixed ROI per axis in mm around the body centre; ``None`` keeps the whole axis.
        stage1_zoom: stage 1's downsampling factor per axis (0.5 halves the resolution).
        run_stage2: ``False`` returns stage 1's upsampled probabilities (validation while training stage 1).
        second_min_ratio: stage 1's label is reduced to its one or two largest components (the kidney pair rule)
            before it centres the box, so a stray false positive cannot move the box off the kidneys.
        sw_batch_size, overlap, mode, mirror_axes, kwargs: the sliding windows' settings
            (:class:`~monai_effseg.inferers.SlidingWindowMirrorInferer`: ``amp``, ``sw_device``, ``device``...).
    """

    def __init__(
        self,
        stage1_patch: Sequence[int],
        stage2_patch: Sequence[int],
        stage2_box_mm: Sequence[float],
        stage1_roi_mm: Sequence[Optional[float]] = (None, None, None),
        stage1_zoom: Sequence[float] = (0.5, 0.5, 1.0),
        run_stage2: bool = True,
        second_min_ratio: float = 0.1,
        sw_batch_size: int = 2,
        overlap: float = 0.5,
        mode: str = "gaussian",
        mirror_axes: Sequence[int] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__()
        window = {
            "sw_batch_size": sw_batch_size,
            "overlap": overlap,
            "mode": mode,
            "mirror_axes": mirror_axes,
            **kwargs,
        }
        self.stage1_window = SlidingWindowMirrorInferer(list(stage1_patch), **window)
        self.stage2_window = SlidingWindowMirrorInferer(list(stage2_patch), **window)
        self.stage2_box_mm = list(stage2_box_mm)
        self.stage1_roi_mm = list(stage1_roi_mm)
        self.downsample = Zoom(list(stage1_zoom), mode="trilinear", keep_size=False)
        self.run_stage2 = run_stage2
        self.second_min_ratio = second_min_ratio

    def stage1_probabilities(self, image: torch.Tensor, stage1: nn.Module) -> torch.Tensor:
        """Stage 1 on one channel-first image ``(1, *spatial)``: probabilities ``(C, *spatial)``."""
        shape = image.shape[1:]
        size = mm_to_voxels(self.stage1_roi_mm, spacing_of(image), shape)
        start = box_start(body_centre(image), size, shape)
        roi = crop_box(image, start, size, float(image.min()))
        small = _plain(self.downsample(roi))[None]
        probs = torch.softmax(_plain(self.stage1_window(small, stage1)).float(), 1)
        probs = F.interpolate(probs, size=list(roi.shape[1:]), mode="trilinear")[0]
        out = _background(probs.shape[0], shape, image)
        _paste(out, probs, start)
        return out

    def stage1_label(self, probs: torch.Tensor) -> torch.Tensor:
        """Stage 1's label map ``(1, *spatial)`` (float), reduced to the kidney pair and its attached tumour."""
        label = probs.argmax(0).cpu().numpy().astype(np.uint8)
        label = keep_kidney_pair(label, tumour_labels=tuple(range(2, probs.shape[0])),
                                 second_min_ratio=self.second_min_ratio)  # fmt: skip
        return torch.from_numpy(label)[None].to(device=probs.device, dtype=torch.float32)

    def stage2_probabilities(
        self, image: torch.Tensor, prior: torch.Tensor, stage2: nn.Module
    ) -> Optional[torch.Tensor]:
        """Stage 2 on the box centred on ``prior`` (stage 1's label); ``None`` when stage 1 found nothing."""
        centre = foreground_centre(prior[0])
        if centre is None:
            return None
        shape = image.shape[1:]
        size = mm_to_voxels(self.stage2_box_mm, spacing_of(image), shape)
        start = box_start(centre, size, shape)
        box = torch.cat(
            [_plain(crop_box(image, start, size, float(image.min()))), _plain(crop_box(prior, start, size))]
        )
        probs = torch.softmax(_plain(self.stage2_window(box[None], stage2)).float(), 1)[0]
        out = _background(probs.shape[0], shape, image)
        _paste(out, probs, start)
        return out

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        stage1, stage2 = cascade_stages(network)
        outputs = []
        for i in range(inputs.shape[0]):
            image = inputs[i]
            probs = self.stage1_probabilities(image, stage1)
            if self.run_stage2:
                refined = self.stage2_probabilities(image, self.stage1_label(probs), stage2)
                if refined is None:
                    logger.warning("cascade: stage 1 found no kidney; returning its (empty) segmentation")
                else:
                    probs = refined
            outputs.append(probs)
        return convert_to_dst_type(torch.stack(outputs), inputs, dtype=torch.float32)[0]


class Stage1Predictiond(MapTransform):
    """Add stage 1's segmentation of ``keys`` (the image) as ``output_key``: stage 2's prior input channel while
    training stage 2. Put it in the cached (deterministic) part of the pipeline: it runs stage 1 once per case.

    Args:
        keys: the image key.
        network: the :class:`~monai_effseg.nets.UNetCascade` (its trained ``stage1`` is used, in eval mode).
        inferer: the :class:`CascadeInferer` whose stage-1 settings produce the prior, as at inference.
        output_key: where the label map ``(1, *spatial)`` goes (a MetaTensor with the image's geometry).
    """

    def __init__(self, keys: KeysCollection, network: nn.Module, inferer: CascadeInferer,
                 output_key: str = "stage1", allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, allow_missing_keys)
        self.network = network
        self.inferer = inferer
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        stage1, _ = cascade_stages(self.network)
        device = next(stage1.parameters()).device
        was_training = stage1.training
        stage1.eval()
        try:
            for key in self.key_iterator(d):
                with torch.no_grad():
                    probs = self.inferer.stage1_probabilities(d[key].to(device), stage1)
                    label = self.inferer.stage1_label(probs).cpu()
                d[self.output_key] = convert_to_dst_type(label, d[key], dtype=torch.float32)[0]
        finally:
            stage1.train(was_training)
        return d
