"""Mobile inverted-bottleneck blocks of EfficientNet and EfficientNetV2, for 2D and 3D.

- ``"mbconv"``: MBConv (Sandler et al., MobileNetV2, CVPR 2018; Tan & Le, EfficientNet, ICML 2019):
  1x1 expand -> depthwise kxk (stride) -> SE -> 1x1 project. With ``expand_ratio=1`` there is no expand conv.
- ``"ds"``: the depthwise-separable MBConv1 of EfficientNet's first stage (depthwise -> SE -> 1x1), i.e. MBConv, expand 1.
- ``"fused_mbconv"``: Fused-MBConv (Tan & Le, EfficientNetV2, ICML 2021): kxk expand conv (stride) -> [SE] -> 1x1
  project. With ``expand_ratio=1`` it is kxk (in -> in) + 1x1, as in the d-li14 PyTorch port that Martinho's thesis
  ("Efficient Algorithms for Medical Image Segmentation") counted.
- ``"cn"``: Fused-MBConv1 of the official EfficientNetV2 (timm ``cn``): one kxk conv.

Every block adds its input back (through stochastic depth, Huang et al. 2016, EfficientNet's "drop connect") when the
stride is 1 and the width is kept.
"""

from __future__ import annotations

import torch
from monai.networks.layers import DropPath
from monai.utils import ensure_tuple
from torch import nn

from monai_effseg.blocks import layers
from monai_effseg.blocks.conv import ConvNormAct
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.registry import KernelOrStride, register_block, require_neutral
from monai_effseg.blocks.se import SqueezeExcitation, se_channels
from monai_effseg.blocks.silu import EFFICIENTNET_ACT, EFFICIENTNET_NORM


class ConvNorm(nn.Sequential):
    """conv (no bias) -> norm: the linear projection that ends every inverted-bottleneck block."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: LayerSpec) -> None:
        super().__init__()
        self.conv = layers.conv(spatial_dims, in_channels, out_channels, 1, bias=False)
        self.norm = layers.norm(norm, spatial_dims, out_channels)


def has_residual(stride: KernelOrStride, in_channels: int, out_channels: int) -> bool:
    return in_channels == out_channels and all(s == 1 for s in ensure_tuple(stride))


class ResidualBlock(nn.Module):
    """``body(x)``, plus ``x`` through stochastic depth when the body keeps the size and width."""

    def __init__(self, body: nn.Module, residual: bool, drop_connect_rate: float) -> None:
        super().__init__()
        self.body = body
        self.residual = residual
        self.drop_path = DropPath(drop_connect_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.residual:
            return self.drop_path(out) + x
        return out


def _squeeze(spatial_dims: int, in_channels: int, mid: int, se_ratio: float, se_divisor: int, act: LayerSpec):
    if se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcitation(spatial_dims, mid, se_channels(in_channels, se_ratio, se_divisor), act, inplace=True)


@register_block("mbconv")
class MBConv(ResidualBlock):
    """Inverted residual: 1x1 expand -> depthwise kxk (stride) -> SE -> 1x1 project (BN, no activation).

    Args:
        expand_ratio: hidden width = ``round(in_channels * expand_ratio)``; 1 drops the expand conv (MBConv1).
        se_ratio: squeeze width = ``se_channels(in_channels, se_ratio, se_divisor)`` (from the block's *input* width);
            0 disables SE.
        drop_connect_rate: stochastic-depth probability of the residual branch while training.
        se_divisor: 1 for EfficientNet (``int(in * se_ratio)``); 8 for the d-li14 EfficientNetV2 port.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelOrStride = 3,
        stride: KernelOrStride = 1,
        expand_ratio: float = 6.0,
        se_ratio: float = 0.25,
        norm: LayerSpec = EFFICIENTNET_NORM,
        act: LayerSpec = EFFICIENTNET_ACT,
        drop_connect_rate: float = 0.0,
        se_divisor: int = 1,
    ) -> None:
        mid = round(in_channels * expand_ratio)
        body = nn.Sequential()
        if expand_ratio != 1:
            body.add_module("expand", ConvNormAct(spatial_dims, in_channels, mid, 1, norm=norm, act=act, bias=False))
        body.add_module(
            "depthwise",
            ConvNormAct(spatial_dims, mid, mid, kernel_size, stride, norm=norm, act=act, bias=False, groups=mid),
        )
        body.add_module("se", _squeeze(spatial_dims, in_channels, mid, se_ratio, se_divisor, act))
        body.add_module("project", ConvNorm(spatial_dims, mid, out_channels, norm))
        super().__init__(body, has_residual(stride, in_channels, out_channels), drop_connect_rate)


@register_block("ds")
def depthwise_separable(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: KernelOrStride = 3,
    stride: KernelOrStride = 1,
    expand_ratio: float = 1.0,
    se_ratio: float = 0.25,
    norm: LayerSpec = EFFICIENTNET_NORM,
    act: LayerSpec = EFFICIENTNET_ACT,
    drop_connect_rate: float = 0.0,
    se_divisor: int = 1,
) -> MBConv:
    """MBConv1 (EfficientNet stage 1): depthwise kxk -> SE -> 1x1, no expansion."""
    if expand_ratio != 1:
        raise ValueError(f"block 'ds' has no expansion; got expand={expand_ratio} (use 'mbconv')")
    return MBConv(
        spatial_dims, in_channels, out_channels, kernel_size, stride, 1.0, se_ratio, norm, act, drop_connect_rate,
        se_divisor,
    )  # fmt: skip


@register_block("fused_mbconv")
class FusedMBConv(ResidualBlock):
    """Fused-MBConv: kxk expand conv (stride) -> SE -> 1x1 project (BN, no activation). The hidden width is
    ``round(in_channels * expand_ratio)``, so expand 1 gives kxk (in -> in) + 1x1 (in -> out)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelOrStride = 3,
        stride: KernelOrStride = 1,
        expand_ratio: float = 4.0,
        se_ratio: float = 0.0,
        norm: LayerSpec = EFFICIENTNET_NORM,
        act: LayerSpec = EFFICIENTNET_ACT,
        drop_connect_rate: float = 0.0,
        se_divisor: int = 1,
    ) -> None:
        mid = round(in_channels * expand_ratio)
        body = nn.Sequential()
        body.add_module(
            "expand", ConvNormAct(spatial_dims, in_channels, mid, kernel_size, stride, norm=norm, act=act, bias=False)
        )
        body.add_module("se", _squeeze(spatial_dims, in_channels, mid, se_ratio, se_divisor, act))
        body.add_module("project", ConvNorm(spatial_dims, mid, out_channels, norm))
        super().__init__(body, has_residual(stride, in_channels, out_channels), drop_connect_rate)


@register_block("cn")
class FusedMBConv1(ResidualBlock):
    """Fused-MBConv1 of the official EfficientNetV2 (timm ``cn``): one kxk conv -> BN -> SiLU, plus the skip."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelOrStride = 3,
        stride: KernelOrStride = 1,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        norm: LayerSpec = EFFICIENTNET_NORM,
        act: LayerSpec = EFFICIENTNET_ACT,
        drop_connect_rate: float = 0.0,
    ) -> None:
        require_neutral("cn", expand_ratio, se_ratio)
        body = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, norm=norm, act=act, bias=False)
        super().__init__(body, has_residual(stride, in_channels, out_channels), drop_connect_rate)
