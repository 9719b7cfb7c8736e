"""CPU fast path for any KiTS network: find the kidneys at low resolution, then run the full-resolution network
only on their boxes.

This generalises the first stage of Hao's cascade (MSc thesis, University of Melbourne, 2024, section 3.1): a small
*localizer* segments the CT downsampled ``zoom`` times (by default 4x in-plane: 3.1 x 3.1 x 3 mm for KiTS19's
0.78 x 0.78 x 3 mm), its foreground is reduced to the kidney pair (the MSS U-Net rule: the largest component and the
second largest when it is at least ``second_min_ratio`` of it), and each kept component's box, grown by
``margin_mm`` on every side, is segmented by the bundle's own network at full resolution. Everything outside the
boxes is background. Where the localizer finds nothing the whole volume is segmented (a warning says so), so the
fast path never returns less than the full one would look at.

How the boxes are covered (``windows``):

- ``"full_grid"`` (the bundles' default): the full pass's own sliding-window grid over the whole volume (the training
  patch ``roi_size``, its overlap, padding and Gaussian blending), of which only the windows that overlap a box are
  run. Every window that covers a box voxel runs, in the full pass's order, so inside the boxes the logits are the
  full pass's: the fast path can differ from it only where the full pass finds kidney outside the boxes.
- ``"box_patches"``: each box, grown with the CT around it to at least one patch, covered by its own grid of
  training patches: fewer windows, but not the full pass's, so a network whose output depends on where a window
  sits (an InstanceNorm network trained briefly) drifts from the full pass.
- ``"box"``: one window of the box's own size rounded up to ``divisible`` (fewest FLOPs: a 190 x 190 x 60 kidney box
  needs four overlapping 128^3 patches, each two-thirds padding in z), capped at ``max_window``; drifts the most.

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

__all__ = ["BoxWindowFilter", "CoarseToFineInferer", "box_fraction", "kidney_boxes", "load_localizer", "localizer_path"]

WINDOW_MODES = ("full_grid", "box_patches", "box")

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
        roi_size: the network's training patch (the full pass's window); needed by ``"full_grid"`` and
            ``"box_patches"``.
        windows: how the boxes are covered: ``"full_grid"``, ``"box_patches"`` or ``"box"`` (the module's docstring).
        max_grow: with ``"full_grid"``, rounds of growing a box by one window step where the network's foreground
            touches its face (:meth:`grow`); only the new windows run.
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
        windows: str = "full_grid",
        max_grow: int = 3,
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
        if windows not in WINDOW_MODES:
            raise ValueError(f"windows={windows!r}: expected one of {WINDOW_MODES}")
        if windows != "box" and self.roi_size is None:
            raise ValueError(f"windows={windows!r} runs the network's training patch: pass roi_size (the bundles pass "
                             "@patch_size), or use windows='box'")  # fmt: skip
        self.windows = windows
        self.max_grow = int(max_grow)
        self.second_min_ratio = second_min_ratio
        self.max_components = max_components
        self.background_logit = float(background_logit)
        self.window_kwargs = {"sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode, **kwargs}
        self.downsample = Zoom(self.zoom, mode="trilinear", keep_size=False)
        self.localizer_divisible = int(localizer_divisible)
        self.mirror_axes = tuple(mirror_axes)
        self.last_boxes: list[list[Box]] = []  # per image of the last call: what was segmented at full resolution
        self.last_windows: list[int] = []  # per image of the last call: windows the network ran on
        self._classes = 0  # output channels, read from the localizer (same classes as the network)

    def localize(self, image: torch.Tensor) -> list[Box]:
        """The kidney boxes (full-resolution voxels) of one channel-first image ``(1, *spatial)``."""
        spatial = image.shape[1:]
        small = _plain(self.downsample(image)).float()[None]  # the Zoomd of configs/localizer.json's training data
        small_size = small.shape[2:]
        device = next(self.localizer.parameters()).device
        window = _round_up(small_size, [self.localizer_divisible] * len(small_size), self.max_window)
        with torch.no_grad():
            logits = SlidingWindowMirrorInferer(window, **self.window_kwargs)(small.to(device), self.localizer)
        self._classes = int(logits.shape[1])
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
        """The window over ``box``: the network's training patch (``roi_size``), or with ``windows="box"`` one window
        of the box's size rounded up to ``divisible``; at most ``max_window`` per axis."""
        if self.windows != "box":
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

    def segment_full_grid(
        self,
        image: torch.Tensor,
        boxes: Sequence[Box],
        network: Any,
        *args: Any,
        cache: Optional[dict] = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The full pass's logits ``(C, *spatial)`` of one image, computed only on the windows that overlap ``boxes``
        (elsewhere they are partial or 0: the caller keeps the boxes only). Windows already in ``cache`` (a
        :class:`BoxWindowFilter` cache of an earlier call on the same image) are not run again."""
        # the full pass pads a volume smaller than the window (the first half of the padding before it): the windows'
        # coordinates are in that padded volume
        pad = [max(r - n, 0) // 2 for r, n in zip(self.roi_size, image.shape[1:])]
        padded = [tuple((lo + p, hi + p) for (lo, hi), p in zip(box, pad)) for box in boxes]
        # autocast and mirroring happen inside the filter, so that a cached window holds its final (TTA) logits
        per_window = SlidingWindowMirrorInferer(self.roi_size, mirror_axes=self.mirror_axes, **self.window_kwargs)
        selected = BoxWindowFilter(per_window.predictor(network), padded, self._classes, cache)
        grid = SlidingWindowMirrorInferer(self.roi_size, with_coord=True, **{**self.window_kwargs, "amp": False})
        logits = _plain(grid(_plain(image)[None], selected, *args, **kwargs))[0]
        self.last_windows[-1] += selected.runs
        return logits

    def grow(self, logits: torch.Tensor, boxes: Sequence[Box], step: Sequence[int]) -> list[Box]:
        """``boxes`` pushed out by ``step`` voxels on every face that the network's foreground (argmax of ``logits``,
        ``(C, *spatial)``) touches, unless the face is the volume's border: a kidney or tumour that reaches beyond
        what the localizer saw. Overlapping boxes are merged."""
        shape, out = logits.shape[1:], []
        for box in boxes:
            foreground = logits[(slice(None), *(slice(lo, hi) for lo, hi in box))].argmax(0) > 0
            faces = []
            for axis, ((lo, hi), n, s) in enumerate(zip(box, shape, step)):
                low = lo > 0 and bool(foreground.select(axis, 0).any())
                high = hi < n and bool(foreground.select(axis, hi - lo - 1).any())
                faces.append((max(lo - s, 0) if low else lo, min(hi + s, n) if high else hi))
            out.append(tuple(faces))
        return _merge_overlapping(out)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        outputs, self.last_boxes, self.last_windows = [], [], []
        for image in inputs:
            found = self.localize(image)
            self.last_windows.append(0)
            boxes = found or [tuple((0, n) for n in image.shape[1:])]
            if not found:
                logger.warning("fast path: the localizer found no kidney; segmenting the whole volume instead")
            if self.windows == "full_grid":
                out, boxes = self.segment_full_grid_grown(image, boxes, network, *args, **kwargs)
            else:
                out = self.segment_boxes(image, boxes, network, *args, **kwargs)
            self.last_boxes.append(boxes if found else [])
            outputs.append(out)
        return convert_to_dst_type(torch.stack(outputs), inputs, dtype=torch.float32)[0]

    def segment_boxes(self, image: torch.Tensor, boxes: list[Box], network: Any, *args: Any, **kwargs: Any):
        """``"box_patches"`` and ``"box"``: each box segmented on its own (:meth:`segment_box`), background
        elsewhere."""
        out = None
        for box in boxes:
            logits = self.segment_box(image, box, network, *args, **kwargs).float()
            if out is None:
                out = torch.zeros((logits.shape[0], *image.shape[1:]), dtype=torch.float32, device=logits.device)
                out[0] = self.background_logit
            out[(slice(None), *(slice(lo, hi) for lo, hi in box))] = logits
        return out

    def segment_full_grid_grown(
        self, image: torch.Tensor, boxes: list[Box], network: Any, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, list[Box]]:
        """:meth:`segment_full_grid`, the boxes grown (:meth:`grow`, by one window step) and the new windows run until
        no foreground touches a box's face or ``max_grow`` rounds are done; background outside the final boxes."""
        # one step of the window grid: each round adds at most one ring of windows
        step = [max(int(r * (1 - self.window_kwargs["overlap"])), 1) for r in self.roi_size]
        cache: Optional[dict] = {} if self.max_grow else None  # only a later round reads it
        for attempt in range(self.max_grow + 1):
            out = self.segment_full_grid(image, boxes, network, *args, cache=cache, **kwargs).float()
            grown = self.grow(out, boxes, step) if attempt < self.max_grow else boxes
            if grown == boxes:
                break
            boxes = grown
        inside = torch.zeros(out.shape[1:], dtype=torch.bool, device=out.device)
        for box in boxes:
            inside[tuple(slice(lo, hi) for lo, hi in box)] = True
        out.masked_fill_(~inside, 0.0)  # in place: the volume's logits are the largest tensor here
        out[0].masked_fill_(~inside, self.background_logit)
        return out, boxes


class BoxWindowFilter:
    """A sliding-window predictor (MONAI's ``with_coord=True`` form, ``(windows, coordinates)``) that runs
    ``network`` only on the windows that overlap one of ``boxes`` (in the windows' coordinates) and returns zero
    logits (``channels``) for the others; ``runs`` counts the windows run. With a ``cache`` (keyed by the windows'
    coordinates, filled with every window run), a window found there is not run again."""

    def __init__(self, network: Any, boxes: Sequence[Box], channels: int, cache: Optional[dict] = None) -> None:
        self.network = network
        self.boxes = list(boxes)
        self.channels = channels
        self.cache = cache
        self.runs = 0

    def overlaps(self, window: Sequence[tuple[int, int]]) -> bool:
        return any(all(s < hi and lo < e for (s, e), (lo, hi) in zip(window, box)) for box in self.boxes)

    def __call__(self, x: torch.Tensor, coordinates: Sequence[Sequence[slice]], *args: Any, **kwargs: Any):
        cache = {} if self.cache is None else self.cache
        keys = [tuple((s.start, s.stop) for s in list(c)[2:]) for c in coordinates]
        run = [i for i, key in enumerate(keys) if key not in cache and self.overlaps(key)]
        out = x.new_zeros((x.shape[0], self.channels, *x.shape[2:]))
        for i, key in enumerate(keys):
            if key in cache:
                out[i] = cache[key]
        if run:
            logits = self.network(x if len(run) == x.shape[0] else x[run], *args, **kwargs)
            out[run] = logits.to(out.dtype)
            if self.cache is not None:
                self.cache.update((keys[i], window) for i, window in zip(run, logits))
            self.runs += len(run)
        return out


def _round_up(sizes: Sequence[int], divisible: Sequence[int], cap: Sequence[int]) -> list[int]:
    """``sizes`` rounded up to a multiple of ``divisible``, at most ``cap``, per axis."""
    return [min(math.ceil(n / d) * d, c) for n, d, c in zip(sizes, divisible, cap)]


def box_fraction(boxes: Sequence[Box], shape: Sequence[int]) -> float:
    """Share of the volume's voxels inside ``boxes`` (they do not overlap: :func:`kidney_boxes` merges them)."""
    return sum(float(np.prod([hi - lo for lo, hi in box])) for box in boxes) / float(np.prod(shape))
