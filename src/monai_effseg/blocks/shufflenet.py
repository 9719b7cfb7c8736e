"""ShuffleNetV2 units for 2D and 3D (Ma et al., "ShuffleNet V2", ECCV 2018), as used by Tustumi,
"Automatic Liver Tumor Segmentation from CT Images Based on 2D and 3D Deep Neural Networks" (thesis, 2020), section
2.1.12, Fig. 2.10c/d.

- ``"shufflenetv2"``: the unit a table row asks for: the basic unit where the row keeps size and width, else the
  downsampling unit (a row's first block, which strides and/or changes the width).
- ``"shufflenetv2_down"``: always the downsampling unit.

Basic unit (``in == out = c``, stride 1, ``b = c / 2``): split the channels in halves; one half passes unchanged (G3),
the other goes through 1x1 -> BN -> ReLU -> depthwise kxk -> BN -> 1x1 -> BN -> ReLU [-> SE]; concatenate; shuffle.
Downsampling unit (``in -> out``, ``b = out / 2``): branch 1 = depthwise kxk (stride) -> BN -> 1x1 (in -> b) -> BN -> ReLU;
branch 2 = 1x1 (in -> b) -> BN -> ReLU -> depthwise kxk (stride) -> BN -> 1x1 -> BN -> ReLU [-> SE]; concatenate; shuffle.
Tustumi's tables use it with stride 1 where a row only changes the width (e.g. 32 -> 16).

The tables give every ShuffleNetV2 row SE 0.25; as in the SE variant of ShuffleNetV2 it scales the output of the
convolved branch, with squeeze width ``int(b * se_ratio)``.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_effseg.blocks import layers
from monai_effseg.blocks.conv import ConvNormAct
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.mbconv import has_residual
from monai_effseg.blocks.mobilenet import LITE_NORM
from monai_effseg.blocks.registry import KernelOrStride, register_block
from monai_effseg.blocks.se import SqueezeExcitation, se_channels

__all__ = ["SHUFFLENET_ACT", "DepthwiseConvNorm", "ShuffleUnit", "ShuffleDownUnit", "shufflenetv2"]

SHUFFLENET_ACT: tuple = ("relu", {"inplace": True})


class DepthwiseConvNorm(nn.Sequential):
    """Depthwise kxk conv (no bias) -> norm, no activation (ShuffleNetV2 keeps its depthwise convs linear)."""

    def __init__(
        self, spatial_dims: int, channels: int, kernel_size: KernelOrStride, stride: KernelOrStride, norm: LayerSpec
    ) -> None:
        super().__init__()
        self.conv = layers.conv(spatial_dims, channels, channels, kernel_size, stride, groups=channels, bias=False)
        self.norm = layers.norm(norm, spatial_dims, channels)


def _branch(
    spatial_dims: int, in_channels: int, channels: int, kernel_size, stride, se_ratio: float, norm, act
) -> nn.Sequential:
    """1x1 -> BN -> act -> depthwise kxk (stride) -> BN -> 1x1 -> BN -> act [-> SE]."""
    branch = nn.Sequential()
    branch.add_module("reduce", ConvNormAct(spatial_dims, in_channels, channels, 1, norm=norm, act=act, bias=False))
    branch.add_module("depthwise", DepthwiseConvNorm(spatial_dims, channels, kernel_size, stride, norm))
    branch.add_module("project", ConvNormAct(spatial_dims, channels, channels, 1, norm=norm, act=act, bias=False))
    if se_ratio > 0:
        branch.add_module(
            "se", SqueezeExcitation(spatial_dims, channels, se_channels(channels, se_ratio), act, inplace=True)
        )
    return branch


class ShuffleUnit(nn.Module):
    """The basic ShuffleNetV2 unit (Fig. 2.10c): channel split, one convolved half, concat, channel shuffle."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        kernel_size: KernelOrStride = 3,
        se_ratio: float = 0.0,
        norm: LayerSpec = LITE_NORM,
        act: LayerSpec = SHUFFLENET_ACT,
    ) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"a ShuffleNetV2 unit splits its channels in halves; got {channels}")
        self.half = channels // 2
        self.branch = _branch(spatial_dims, self.half, self.half, kernel_size, 1, se_ratio, norm, act)
        self.shuffle = nn.ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, convolved = x.split(self.half, dim=1)
        return self.shuffle(torch.cat([kept, self.branch(convolved)], dim=1))


class ShuffleDownUnit(nn.Module):
    """The downsampling ShuffleNetV2 unit (Fig. 2.10d): two convolved branches of ``out / 2`` channels each."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelOrStride = 3,
        stride: KernelOrStride = 2,
        se_ratio: float = 0.0,
        norm: LayerSpec = LITE_NORM,
        act: LayerSpec = SHUFFLENET_ACT,
    ) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"a ShuffleNetV2 unit needs an even output width; got {out_channels}")
        half = out_channels // 2
        self.shortcut = nn.Sequential(
            DepthwiseConvNorm(spatial_dims, in_channels, kernel_size, stride, norm),
            ConvNormAct(spatial_dims, in_channels, half, 1, norm=norm, act=act, bias=False),
        )
        self.branch = _branch(spatial_dims, in_channels, half, kernel_size, stride, se_ratio, norm, act)
        self.shuffle = nn.ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(torch.cat([self.shortcut(x), self.branch(x)], dim=1))


@register_block("shufflenetv2_down")
def shufflenetv2_down(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: KernelOrStride = 3,
    stride: KernelOrStride = 2,
    expand_ratio: float = 1.0,
    se_ratio: float = 0.0,
    norm: LayerSpec = LITE_NORM,
    act: LayerSpec = SHUFFLENET_ACT,
) -> ShuffleDownUnit:
    if expand_ratio != 1:
        raise ValueError(f"ShuffleNetV2 units have no expansion; got expand={expand_ratio}")
    return ShuffleDownUnit(spatial_dims, in_channels, out_channels, kernel_size, stride, se_ratio, norm, act)


@register_block("shufflenetv2")
def shufflenetv2(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: KernelOrStride = 3,
    stride: KernelOrStride = 1,
    expand_ratio: float = 1.0,
    se_ratio: float = 0.0,
    norm: LayerSpec = LITE_NORM,
    act: LayerSpec = SHUFFLENET_ACT,
) -> nn.Module:
    """The basic unit where size and width are kept, else the downsampling unit."""
    if expand_ratio != 1:
        raise ValueError(f"ShuffleNetV2 units have no expansion; got expand={expand_ratio}")
    if has_residual(stride, in_channels, out_channels):
        return ShuffleUnit(spatial_dims, in_channels, kernel_size, se_ratio, norm, act)
    return ShuffleDownUnit(spatial_dims, in_channels, out_channels, kernel_size, stride, se_ratio, norm, act)
