"""CPU fast path for any KiTS network: find the kidneys at low resolution, then run the full-resolution network
only on their boxes.

This generalises the first stage of Hao's cascade (MSc thesis, University of Melbourne, 2024, section 3.1): a small
*localizer* segments the CT downsampled ``zoom`` times (by default 4x in-plane: 3.1 x 3.1 x 3 mm for KiTS19's
0.78 x 0.78 x 3 mm), its foreground is reduced to the kidney pair (the MSS U-Net rule: the largest component and the
second largest when it is at least ``second_min_ratio`` of it), and each kept component's box, grown by
``margin_mm`` on every side, is segmented by the bundle's own network at full resolution. Everything outside the
boxes is background. Where the localizer finds nothing the whole volume is segmented (a warning says so), so the
fast path never returns less than the full one would look at.

With ``roi_size`` (the bundles pass their training patch) each box is covered by the full pass's own windows, the
box first grown with the CT around it to at least one patch, so the network sees what it would see in the full
pass. Without it, each box is one window of its own size rounded up to ``divisible`` (fewer FLOPs: a 190 x 190 x 60
kidney box needs four overlapping 128^3 patches, each two-thirds padding in z), capped at ``max_window``.

The localizer is trained by ``configs/localizer.json`` (a whole training config); its checkpoint lives at
``models/localizer/model.pt`` beside the bundle's ``models/model.pt`` (:func:`localizer_path`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from monai.inferers import Inferer
from monai.transforms import Zoom
from monai.utils import convert_to_dst_type
from scipy import ndimage
from torch import nn

from monai_effseg.inferers.cascade import _plain
from monai_effseg.inferers.sliding_window import SlidingWindowMirrorInferer
from monai_effseg.transforms.cascade import spacing_of
from monai_effseg.transforms.postprocess import kidney_pair_components

__all__ = ["CoarseToFineInferer", "box_fraction", "kidney_boxes", "load_localizer", "localizer_path"]

logger = logging.getLogger(__name__)

Box = tuple[tuple[int, int], ...]  # ((start, stop), ...) per spatial axis, stop exclusive


def localizer_path(ckpt_path: Union[str, Path]) -> str:
    """Where the localizer of the model at ``ckpt_path`` lives: ``<its folder>/localizer/model.pt``."""
    return str(Path(ckpt_path).parent / "localizer" / "model.pt")


def load_localizer(network: nn.Module, path: Union[str, Path]) -> nn.Module:
    """``network`` with the weights of ``path`` (a ``model.pt`` or a training checkpoint), in eval mode. A missing
    file is an error that says how to train the localizer, or how to run without it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no localizer checkpoint. The fast CPU path (configs/inference_fast.json) first finds the "
            "kidneys with a small low-resolution network: train it with python -m monai.bundle run --config_file "
            "configs/localizer.json --dataset_dir <the model's dataset> (it reads the model's fingerprint), or "
            "run configs/inference.json alone for the full-volume path"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state.get("model", state))
    except RuntimeError as e:
        raise RuntimeError(f"{path} does not fit the localizer network of this config ({e}); was it trained with "
                           "another configs/localizer.json?") from None  # fmt: skip
    return network.eval()


def kidney_boxes(
    foreground: np.ndarray, margin: Sequence[int], second_min_ratio: float = 0.1, max_components: int = 2
) -> list[Box]:
    """Boxes of the kidney pair in a boolean mask: the largest component, and the next ``max_components - 1``
    largest when each is at least ``second_min_ratio`` of it, each grown by ``margin`` voxels per axis (clipped to
    the volume); overlapping boxes are merged. ``[]`` when the mask is empty."""
    components, n = ndimage.label(foreground)
    if n == 0:
        return []
    objects = ndimage.find_objects(components)
    boxes = [
        tuple((max(s.start - m, 0), min(s.stop + m, n_)) for s, m, n_ in zip(objects[i - 1], margin, foreground.shape))
        for i in kidney_pair_components(components, second_min_ratio, max_components)
    ]
    return _merge_overlapping(boxes)


def _merge_overlapping(boxes: list[Box]) -> list[Box]:
    merged: list[Box] = []
    for box in boxes:
        for j, other in enumerate(merged):
            if all(lo < o_hi and o_lo < hi for (lo, hi), (o_lo, o_hi) in zip(box, other)):
                merged[j] = tuple((min(a, c), max(b, d)) for (a, b), (c, d) in zip(box, other))
                return _merge_overlapping(merged[:j] + merged[j + 1 :] + [merged[j]])
        merged.append(box)
    return merged


class CoarseToFineInferer(Inferer):
    """Localize at low resolution, segment the kidney boxes at full resolution; returns logits ``(B, C, *spatial)``
    on the input's grid (background logit ``background_logit`` and 0 elsewhere outside the boxes, so a softmax gives
    background probability ~1 there).

    Args:
        localizer: the trained low-resolution network (:func:`load_localizer`); same classes as the main network.
        zoom: downsampling of the input for the localizer, per spatial axis (0.25: a quarter of the voxels per axis).
        localizer_divisible: the localizer's window (the whole downsampled volume, at most ``max_window`` per axis)
            is rounded up to a multiple of this (2 ** its downsamplings).
        margin_mm: the box margin around each localized kidney (covers the localizer's coarse border and tumours
            that it under-segments).
        divisible: box windows are rounded up to a multiple of this per axis (2 ** the network's downsamplings).
        max_window: the largest single window per axis; larger boxes are covered by overlapping windows this size.
        roi_size: the network's training patch: the boxes are then covered by overlapping windows of that size (the
            full pass's windows; the default in the bundles' ``inference_fast.json``), each box first grown with
            the CT around it to at least that size. ``None``: one window of the box's own size (fewer FLOPs; a
            network sensitive to the window's size, as an InstanceNorm network trained briefly can be, then drifts
            from the full pass).
        second_min_ratio, max_components: the kidney-pair rule applied to the localizer's foreground.
        background_logit: the background logit written outside the boxes.
        sw_batch_size, overlap, mode, mirror_axes, kwargs: the windows' settings
            (:class:`~monai_effseg.inferers.SlidingWindowMirrorInferer`: ``amp``, ``sw_device``...); ``mirror_axes``
            applies to the boxes only (the localizer runs without TTA).
    """

    def __init__(
        self,
        localizer: nn.Module,
        zoom: Sequence[float] = (0.25, 0.25, 1.0),
        localizer_divisible: int = 16,
        margin_mm: float = 15.0,
        divisible: Union[int, Sequence[int]] = 32,
        max_window: Sequence[int] = (256, 256, 128),
        roi_size: Optional[Sequence[int]] = None,
        second_min_ratio: float = 0.1,
        max_components: int = 2,
        background_logit: float = 20.0,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        mode: str = "gaussian",
        mirror_axes: Sequence[int] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.localizer = localizer
        self.zoom = [float(z) for z in zoom]
        self.margin_mm = float(margin_mm)
        self.divisible = (
            [int(divisible)] * len(self.zoom) if isinstance(divisible, int) else [int(d) for d in divisible]
        )
        self.max_window = [int(w) for w in max_window]
        self.roi_size = None if roi_size is None else [int(r) for r in roi_size]
        self.second_min_ratio = second_min_ratio
        self.max_components = max_components
        self.background_logit = float(background_logit)
        self.window_kwargs = {"sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode, **kwargs}
        self.downsample = Zoom(self.zoom, mode="trilinear", keep_size=False)
        self.localizer_divisible = int(localizer_divisible)
        self.mirror_axes = tuple(mirror_axes)
        self.last_boxes: list[list[Box]] = []  # per image of the last call: what was segmented at full resolution

    def localize(self, image: torch.Tensor) -> list[Box]:
        """The kidney boxes (full-resolution voxels) of one channel-first image ``(1, *spatial)``."""
        spatial = image.shape[1:]
        small = _plain(self.downsample(image)).float()[None]  # the Zoomd of configs/localizer.json's training data
        small_size = small.shape[2:]
        device = next(self.localizer.parameters()).device
        window = _round_up(small_size, [self.localizer_divisible] * len(small_size), self.max_window)
        with torch.no_grad():
            logits = SlidingWindowMirrorInferer(window, **self.window_kwargs)(small.to(device), self.localizer)
        foreground = (_plain(logits)[0].argmax(0) > 0).cpu().numpy()
        spacing = spacing_of(image)
        margin = [math.ceil(self.margin_mm / s) for s in spacing]
        boxes = []
        for small_box in kidney_boxes(foreground, [0] * len(spatial), self.second_min_ratio, self.max_components):
            box = []
            for (lo, hi), n, m, n_small in zip(small_box, spatial, margin, small_size):
                scale = n / n_small
                # one low-resolution voxel more on each side: a kidney border that fills part of a coarse voxel
                # may fall below the localizer's threshold there
                box.append((max(math.floor((lo - 1) * scale) - m, 0), min(math.ceil((hi + 1) * scale) + m, n)))
            boxes.append(tuple(box))
        return _merge_overlapping(boxes)

    def window_for(self, box: Box) -> list[int]:
        """The window over ``box``: the network's training patch (``roi_size``) where one is given, else one window of
        the box's size rounded up to ``divisible``; at most ``max_window`` per axis."""
        if self.roi_size is not None:
            return list(self.roi_size)
        return _round_up([hi - lo for lo, hi in box], self.divisible, self.max_window)

    def context_box(self, box: Box, shape: Sequence[int]) -> Box:
        """``box`` grown, centred, to at least the window on every axis the volume allows: the network then sees the
        CT around the kidney where the full pass would, instead of the sliding window's zero padding."""
        out = []
        for (lo, hi), w, n in zip(box, self.window_for(box), shape):
            size = min(max(hi - lo, w), n)
            start = min(max(lo - (size - (hi - lo)) // 2, 0), n - size)
            out.append((start, start + size))
        return tuple(out)

    def segment_box(self, image: torch.Tensor, box: Box, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The network's logits on ``box`` (computed on :meth:`context_box`, then cut back to ``box``)."""
        context = self.context_box(box, image.shape[1:])
        crop = _plain(image)[(slice(None), *(slice(lo, hi) for lo, hi in context))][None]
        window = SlidingWindowMirrorInferer(self.window_for(box), mirror_axes=self.mirror_axes, **self.window_kwargs)
        logits = _plain(window(crop, network, *args, **kwargs))[0]
        return logits[(slice(None), *(slice(lo - c_lo, hi - c_lo) for (lo, hi), (c_lo, _) in zip(box, context)))]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        outputs, self.last_boxes = [], []
        for image in inputs:
            boxes = self.localize(image)
            self.last_boxes.append(boxes)
            if not boxes:
                logger.warning("fast path: the localizer found no kidney; segmenting the whole volume instead")
                boxes = [tuple((0, n) for n in image.shape[1:])]
            out = None
            for box in boxes:
                logits = self.segment_box(image, box, network, *args, **kwargs).float()
                if out is None:
                    out = torch.zeros((logits.shape[0], *image.shape[1:]), dtype=torch.float32, device=logits.device)
                    out[0] = self.background_logit
                out[(slice(None), *(slice(lo, hi) for lo, hi in box))] = logits
            outputs.append(out)
        return convert_to_dst_type(torch.stack(outputs), inputs, dtype=torch.float32)[0]


def _round_up(sizes: Sequence[int], divisible: Sequence[int], cap: Sequence[int]) -> list[int]:
    """``sizes`` rounded up to a multiple of ``divisible``, at most ``cap``, per axis."""
    return [min(math.ceil(n / d) * d, c) for n, d, c in zip(sizes, divisible, cap)]


def box_fraction(boxes: Sequence[Box], shape: Sequence[int]) -> float:
    """Share of the volume's voxels inside ``boxes`` (they do not overlap: :func:`kidney_boxes` merges them)."""
    return sum(float(np.prod([hi - lo for lo, hi in box])) for box in boxes) / float(np.prod(shape))
