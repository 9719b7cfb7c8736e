"""LiteUNet and the liver-then-tumour cascade of Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on
2D and 3D Deep Neural Networks" (thesis, 2020), sections 3.1.4-3.1.8, Figs. 3.3 and 3.4.

LiteUNet = stem -> encoder -> head -> decoder -> output, with shortcuts from every encoder resolution to the decoder
and from the input (before the stem reduces it) to the output block:

- **stem + encoder**: a preset of :mod:`monai_effseg.encoders.lite` (Tables A.3-A.23), e.g. ``"dsts-3d-bottom"``;
- **head**: 1x1 conv -> BN -> act on the deepest features ("connects the encoder block to the decoder");
- **decoder**, deepest level first: transposed conv (kernel = stride) -> concatenation with the encoder's features at
  that resolution -> 3x3 conv -> BN -> act, at the encoder's widths;
- **output**: transposed conv back to the input resolution -> concatenation with the input itself -> depthwise 3x3 ->
  BN -> act -> 1x1 to the classes. It returns logits (the thesis' softmax is applied by the loss and inferers).

**2.5D** (2D presets): the 9 axial slices are the input channels; the output is the middle slice's map.
**3D** (3D presets): input ``(B, 1, 8, H, W)`` (slices on the first spatial axis, as the tables' strides are written),
output the middle 4 slices ``(B, C, 4, H, W)``. Each decoder level keeps ``min(slices of the encoder at that
resolution, 4)`` slices, so z is upsampled exactly once, where the encoder drops below 4 slices; the encoder's
shortcuts (and the input shortcut) are centre-cropped along z to fit ("The shortcut connections are cropped to the
desired size on the encoder side to fit the decoder", section 3.1.5). With the tables' z-strides (layers 3 and 4)
that is at the 1/16 -> 1/8 level; see docs/deviations.md for why the text's "first resizing" cannot hold with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_effseg.blocks import layers
from monai_effseg.blocks.conv import ConvNormAct
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.mobilenet import LITE_NORM
from monai_effseg.encoders.lite import PRESETS, SLABS, lite_encoder, preset_family
from monai_effseg.nets.registry import register_net
from monai_effseg.nets.staged import StagedNetwork, stage_index

__all__ = ["COMBINE_MODES", "LiteUNet", "LiverTumourUNet", "combine_liver_mask", "crop_depth"]

logger = logging.getLogger(__name__)

DECODER_ACT: tuple = ("relu", {"inplace": True})
COMBINE_MODES = ("mask", "add")


def crop_depth(x: torch.Tensor, depth: int) -> torch.Tensor:
    """Centre crop of the first spatial axis (the slice axis of a 3D tensor) to ``depth``; 2D tensors pass through."""
    if x.dim() != 5 or x.shape[2] == depth:
        return x
    return x.narrow(2, (x.shape[2] - depth) // 2, depth)


def combine_liver_mask(image: torch.Tensor, liver: torch.Tensor, mode: str = "mask") -> torch.Tensor:
    """Tustumi's section 3.1.7: focus the tumour stage on the liver by *masking* the CT with the liver mask
    (``image * liver``: everything else becomes the window's minimum, 0) or by *adding* the mask to the intensities
    (``image + liver``: the liver is highlighted, the context kept). ``liver`` broadcasts against ``image``."""
    liver = liver.to(image.dtype)
    if mode == "mask":
        return image * liver
    if mode == "add":
        return image + liver
    raise ValueError("combine mode must be 'mask' or 'add', got " + mode)


class DecoderLevel(nn.Module):
    """Upsample ``x`` (transposed conv, kernel = stride), crop the shortcut to its slices, concatenate, fuse."""

    def __init__(self, up: nn.Module, fuse: nn.Module) -> None:
        super().__init__()
        self.up = up
        self.fuse = fuse

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.dim() == 5:
            skip = crop_depth(skip, x.shape[2])
        return self.fuse(torch.cat([x, skip], dim=1))


class LiteUNet(nn.Module):
    """Tustumi's segmentation network over a lightweight encoder preset (see the module docstring).

    Args:
        encoder: a preset name (``monai_effseg.encoders.LITE_PRESETS``), e.g. ``"mobilenetv2-2d-top"``.
        in_channels: input channels; default 9 slices (2.5D) or 1 (3D).
        out_channels: classes, background included (2 for one stage of the cascade).
        in_slices, out_slices: 3D only: slices in and out (8 and 4 in the thesis); ``out_slices`` must be reachable
            by doubling from the encoder's deepest slice count.
        head_channels: width of the head's 1x1 conv (default: the encoder's last width).
        act, norm: activation and norm of the head, decoder and output block (the encoder keeps its family's).
        encoder_kwargs: passed to every encoder block (e.g. ``fused=False`` for DSTS).
    """

    def __init__(
        self,
        encoder: str = "mobilenetv2-2d-default",
        in_channels: Optional[int] = None,
        out_channels: int = 2,
        in_slices: int = SLABS[3].in_slices,
        out_slices: int = SLABS[3].out_slices,
        head_channels: Optional[int] = None,
        act: LayerSpec = DECODER_ACT,
        norm: LayerSpec = LITE_NORM,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        dims = preset_family(encoder).spatial_dims
        in_channels = in_channels if in_channels is not None else (SLABS[2].in_slices if dims == 2 else 1)
        self.spatial_dims = dims
        self.preset = encoder
        self.in_slices = in_slices if dims == 3 else 1
        self.out_slices = out_slices if dims == 3 else 1
        self.encoder = lite_encoder(encoder, in_channels, dims, **encoder_kwargs)
        widths = self.encoder.out_channels
        strides = [ensure_tuple_rep(s, dims) for s in self.encoder.strides]
        depths = self._decoder_depths(strides) if dims == 3 else [1] * (len(widths) + 1)
        head = head_channels or widths[-1]
        self.head = ConvNormAct(dims, widths[-1], head, 1, norm=norm, act=act, bias=False)

        levels, below = [], head
        for level in reversed(range(len(widths) - 1)):  # deepest first, the order forward() runs them
            stride = self._up_stride(strides[level + 1], depths[level + 1], depths[level + 2])
            up = layers.transposed_conv(dims, below, widths[level], stride)
            fuse = ConvNormAct(dims, 2 * widths[level], widths[level], 3, norm=norm, act=act, bias=False)
            levels.append(DecoderLevel(up, fuse))
            below = widths[level]
        self.decoder = nn.ModuleList(levels)

        stride = self._up_stride(strides[0], depths[0], depths[1])
        fused = below + in_channels
        self.output_up = layers.transposed_conv(dims, below, below, stride)
        self.output = nn.Sequential(
            ConvNormAct(dims, fused, fused, 3, norm=norm, act=act, bias=False, groups=fused),
            layers.conv(dims, fused, out_channels, 1, bias=True),
        )
        self.out_channels = out_channels

    def _decoder_depths(self, strides: Sequence[Sequence[int]]) -> list[int]:
        """Slices kept at the input level and after each encoder feature level (``min(encoder's, out_slices)``)."""
        depths, encoder_depth = [], self.in_slices
        for stride in [(1,)] + list(strides):
            if encoder_depth % stride[0]:
                raise ValueError(f"{self.in_slices} input slices do not divide by the encoder's z-strides {strides}")
            encoder_depth //= stride[0]
            depths.append(min(encoder_depth, self.out_slices))
        # depths[i]: slices at level i (0 = input); the decoder only ever doubles them
        for deeper, shallower in zip(depths[1:], depths):
            if shallower not in (deeper, 2 * deeper):
                raise ValueError(f"out_slices={self.out_slices} cannot be reached by doubling from {depths[-1]} slices")
        return depths

    def _up_stride(self, stride: Sequence[int], depth: int, deeper_depth: int) -> tuple[int, ...]:
        if self.spatial_dims == 2:
            return tuple(stride)
        return (depth // deeper_depth,) + tuple(stride[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: List[torch.Tensor] = self.encoder(x)
        y = self.head(features[-1])
        n = len(features)
        for i, level in enumerate(self.decoder):
            y = level(y, features[n - 2 - i])
        y = self.output_up(y)
        image = crop_depth(x, y.shape[2]) if y.dim() == 5 else x
        return self.output(torch.cat([y, image], dim=1))


class LiverTumourUNet(StagedNetwork, nn.Module):
    """Tustumi's two stages in one module (one checkpoint holds both), a
    :class:`monai_effseg.nets.staged.StagedNetwork`: stage 1, ``liver``, segments the liver from the CT; stage 2,
    ``tumour``, segments tumours from the CT combined with the liver mask (:func:`combine_liver_mask`). ``stage``
    (1 or 2) is the stage being trained (:func:`monai_effseg.nets.staged.prepare_stage`); ``forward`` runs both.

    ``forward(x)`` runs both stages on one slab: the stage-1 liver mask (probability > ``threshold``) of the slab's
    output slices, extended to the input slices by repeating the outermost ones (the most a single slab knows), is combined
    with ``x`` for stage 2. It returns log-probabilities of (background, liver, tumour) =
    ``log(1 - p_liver, p_liver (1 - p_tumour m), p_liver p_tumour m)`` with ``m`` the liver mask, so ``softmax``
    gives the probabilities and ``argmax`` the labels. The volume pipeline of the bundles (stage 1 on the whole
    volume, largest liver component, then stage 2) is :class:`monai_effseg.inferers.LiverTumourInferer`, which uses
    ``liver`` and ``tumour`` directly.

    Args:
        liver, tumour: two-class networks (background, foreground), e.g. :class:`LiteUNet`.
        combine: ``"mask"`` or ``"add"``.
        threshold: liver probability above which a voxel is liver.
        stage: the stage being trained.
    """

    stage_names = ("liver", "tumour")
    requires_previous_stages = False  # the tumour stage trains on the ground-truth liver
    inference_stages = stage_names  # called on their own by LiverTumourInferer (optimize_for_inference)

    def __init__(
        self, liver: nn.Module, tumour: nn.Module, combine: str = "mask", threshold: float = 0.5, stage: int = 1
    ) -> None:
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
        self.liver = liver
        self.tumour = tumour
        self.combine = combine
        self.threshold = threshold
        self.stage = stage_index(stage, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p_liver = torch.softmax(self.liver(x), dim=1)[:, 1:2]
        mask = (p_liver > self.threshold).to(x.dtype)
        broadcast = mask  # 2.5D: (B, slices, H, W) and the middle slice's mask
        if x.dim() == 5:  # 3D: the mask covers the middle slices; the outer input slices repeat the nearest one
            before = (x.shape[2] - mask.shape[2]) // 2
            after = x.shape[2] - mask.shape[2] - before
            broadcast = F.pad(mask, [0, 0, 0, 0, before, after], mode="replicate")
        p_tumour = torch.softmax(self.tumour(combine_liver_mask(x, broadcast, self.combine)), dim=1)[:, 1:2] * mask
        probs = torch.cat([1 - p_liver, p_liver * (1 - p_tumour), p_liver * p_tumour], dim=1)
        return torch.log(probs.clamp_min(1e-7))


def _register(name: str) -> None:
    dims = preset_family(name).spatial_dims
    profile_input = (9, 256, 256) if dims == 2 else (1, 8, 256, 256)

    def build(**overrides: Any) -> LiteUNet:
        return LiteUNet(**{"encoder": name, **overrides})

    build.__doc__ = f"LiteUNet over Tustumi's Table {PRESETS[name].table} ({name})."
    register_net(name, profile_input=profile_input)(build)


for _name in PRESETS:
    _register(_name)
