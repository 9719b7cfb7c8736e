"""MobileNetV2 and MobileNetV3 blocks for 2D and 3D, as used by Tustumi, "Automatic Liver Tumor Segmentation from CT
Images Based on 2D and 3D Deep Neural Networks" (thesis, 2020), sections 2.1.11 and 3.1.5.

- ``"inverted_residual"``: MobileNetV2's inverted residual (Sandler et al., CVPR 2018): 1x1 expand -> depthwise kxk
  (stride) -> [SE] -> 1x1 linear projection, ReLU6, identity shortcut when size and width are kept. It is the
  :class:`~monai_effseg.blocks.mbconv.MBConv` structure with MobileNetV2's activation; Tustumi's tables add SE 0.25
  to it (their 2D default is "the same hyperparameters as Tan and Le", i.e. EfficientNet-B0's rows).
- ``"mobilenetv3"``: MobileNetV3's block (Howard et al., ICCV 2019): the same structure with a per-row activation
  (``"relu"`` or ``"hardswish"``, passed through ``StageSpec.extra``) and an SE whose gate is a hard sigmoid.

SE width (both blocks): ``int(in_channels * se_ratio)`` from the block's *input* width, as in EfficientNet. MobileNetV3
itself uses ``make_divisible(expanded / 4, 8)``; with Tustumi's rows that would add ~2M parameters to the 2D default,
which the thesis' Table 4.2 (3.64M for MobileNetV3 vs 3.76M for MobileNetV2) rules out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act
from torch import nn

from monai_effseg.blocks.conv import ConvNormAct
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.mbconv import ConvNorm, MBConv, ResidualBlock, has_residual
from monai_effseg.blocks.registry import KernelOrStride, register_block
from monai_effseg.blocks.se import SqueezeExcitation, se_channels

__all__ = ["LITE_NORM", "MOBILENETV2_ACT", "HardSqueezeExcitation", "MobileNetV3Block", "inverted_residual"]

# MONAI's Act factory has no hard-swish / hard-sigmoid; torch's are single fused kernels and script.
if "HARDSWISH" not in Act.names:

    @Act.factory_function("hardswish")
    def hardswish_factory() -> type[nn.Hardswish]:
        return nn.Hardswish


if "HARDSIGMOID" not in Act.names:

    @Act.factory_function("hardsigmoid")
    def hardsigmoid_factory() -> type[nn.Hardsigmoid]:
        return nn.Hardsigmoid


LITE_NORM: tuple = ("batch", {})
"""BatchNorm with PyTorch's defaults, the norm of every lightweight block of Tustumi's thesis."""

MOBILENETV2_ACT: tuple = ("relu6", {"inplace": True})
MOBILENETV3_ACTS = {"relu": ("relu", {"inplace": True}), "hardswish": ("hardswish", {"inplace": True})}


@register_block("inverted_residual")
def inverted_residual(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: KernelOrStride = 3,
    stride: KernelOrStride = 1,
    expand_ratio: float = 6.0,
    se_ratio: float = 0.0,
    norm: LayerSpec = LITE_NORM,
    act: LayerSpec = MOBILENETV2_ACT,
    drop_connect_rate: float = 0.0,
) -> MBConv:
    """MobileNetV2 inverted residual; ``expand_ratio=1`` has no expand conv (MobileNetV2's first block), ``se_ratio=0``
    no SE (MobileNetV2 proper). Parameters (no SE, ``m = round(in * expand)``, ``K`` = kernel volume):
    ``[in*m + 2m if expand != 1] + m*K + 2m + m*out + 2*out``."""
    return MBConv(
        spatial_dims, in_channels, out_channels, kernel_size, stride, expand_ratio, se_ratio, norm, act,
        drop_connect_rate,
    )  # fmt: skip


class HardSqueezeExcitation(SqueezeExcitation):
    """MobileNetV3's SE: the gate is ``hardsigmoid`` instead of ``sigmoid``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.hardsigmoid(self.excite(self.act(self.squeeze(x.mean(self.spatial_axes, keepdim=True)))))
        if self.inplace and not torch.is_grad_enabled():
            return x.mul_(gate)
        return x * gate


@register_block("mobilenetv3")
class MobileNetV3Block(ResidualBlock):
    """MobileNetV3 bneck: [1x1 expand -> act] -> depthwise kxk (stride) -> act -> [SE, hard-sigmoid gate] -> 1x1 project.

    Args:
        act: the row's activation: a MONAI layer spec, or ``"relu"`` / ``"hardswish"`` (MobileNetV3's RE / HS).
        se_ratio: squeeze width ``int(in_channels * se_ratio)``; 0 disables SE. The squeeze activation is ReLU.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelOrStride = 3,
        stride: KernelOrStride = 1,
        expand_ratio: float = 4.0,
        se_ratio: float = 0.0,
        norm: LayerSpec = LITE_NORM,
        act: LayerSpec = "hardswish",
        drop_connect_rate: float = 0.0,
    ) -> None:
        act = MOBILENETV3_ACTS.get(act, act) if isinstance(act, str) else act
        mid = round(in_channels * expand_ratio)
        body = nn.Sequential()
        if expand_ratio != 1:
            body.add_module("expand", ConvNormAct(spatial_dims, in_channels, mid, 1, norm=norm, act=act, bias=False))
        body.add_module(
            "depthwise",
            ConvNormAct(spatial_dims, mid, mid, kernel_size, stride, norm=norm, act=act, bias=False, groups=mid),
        )
        if se_ratio > 0:
            squeeze = se_channels(in_channels, se_ratio)
            body.add_module("se", HardSqueezeExcitation(spatial_dims, mid, squeeze, MOBILENETV3_ACTS["relu"], True))
        body.add_module("project", ConvNorm(spatial_dims, mid, out_channels, norm))
        super().__init__(body, has_residual(stride, in_channels, out_channels), drop_connect_rate)
