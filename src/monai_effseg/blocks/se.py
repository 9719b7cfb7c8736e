"""Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018) as used inside MBConv blocks
(Tan & Le, "EfficientNet", ICML 2019): global average pool -> 1x1 conv (bias) -> SiLU -> 1x1 conv (bias) -> sigmoid ->
channel-wise scale.
"""

from __future__ import annotations

from typing import List

import torch
from monai.utils import ensure_tuple
from torch import nn

from monai_effseg.blocks import layers
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.registry import KernelOrStride, register_block
from monai_effseg.blocks.silu import EFFICIENTNET_ACT, EFFICIENTNET_NORM


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% down (MobileNetV2's rule,
    also EfficientNet's ``round_filters``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * value else rounded)


def se_channels(block_in_channels: int, se_ratio: float, divisor: int = 1) -> int:
    """The squeeze width, from the *block's input* width (EfficientNet: ``int(in * se_ratio)``). ``divisor > 1`` rounds
    with :func:`make_divisible` as the d-li14 EfficientNetV2 port does (``make_divisible(in // 4, 8)``)."""
    squeeze = int(block_in_channels * se_ratio)
    return make_divisible(squeeze, divisor) if divisor > 1 else max(1, squeeze)


class SqueezeExcitation(nn.Module):
    """Scales each channel of ``x`` by a gate computed from its global average."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        squeeze_channels: int,
        act: LayerSpec = EFFICIENTNET_ACT,
        inplace: bool = False,
    ) -> None:
        """``inplace``: scale ``x`` in place when no gradient is recorded (safe only where nothing else reads ``x``)."""
        super().__init__()
        self.inplace = inplace
        self.squeeze = layers.conv(spatial_dims, channels, squeeze_channels, 1)
        self.act = layers.act(act)
        self.excite = layers.conv(spatial_dims, squeeze_channels, channels, 1)
        self.spatial_axes: List[int] = list(range(2, 2 + spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(self.act(self.squeeze(x.mean(self.spatial_axes, keepdim=True)))))
        if self.inplace and not torch.is_grad_enabled():
            return x.mul_(gate)  # saves allocating (and page-faulting) one full-size tensor per block at inference
        return x * gate


@register_block("squeeze-excitation")
def squeeze_excitation_block(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: KernelOrStride = 1,
    stride: KernelOrStride = 1,
    expand_ratio: float = 1.0,
    se_ratio: float = 0.25,
    norm: LayerSpec = EFFICIENTNET_NORM,
    act: LayerSpec = EFFICIENTNET_ACT,
    se_divisor: int = 1,
) -> nn.Module:
    """SE as a table row: keeps the width and resolution; squeeze width ``se_channels(in_channels, se_ratio)``.
    ``se_ratio=0`` means no SE (an identity), as in every other block."""
    if in_channels != out_channels or any(s != 1 for s in ensure_tuple(stride)) or expand_ratio != 1:
        raise ValueError("squeeze-excitation keeps width and size: needs in == out, stride 1 and expand 1")
    if se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcitation(spatial_dims, in_channels, se_channels(in_channels, se_ratio, se_divisor), act)
