"""Plain convolution blocks: conv-norm-act, the unit of the nnU-Net stacked-conv stage.

Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation",
Nature Methods 18, 2021.
"""

from __future__ import annotations

from torch import nn

from monai_effseg.blocks import layers
from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec
from monai_effseg.blocks.registry import KernelOrStride, register_block, require_neutral


@register_block("conv")
class ConvNormAct(nn.Sequential):
    """conv -> norm -> act. With the nnU-Net defaults: conv (bias) -> InstanceNorm(affine) -> LeakyReLU(0.01)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelOrStride = 3,
        stride: KernelOrStride = 1,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        norm: LayerSpec = NNUNET_NORM,
        act: LayerSpec = NNUNET_ACT,
        bias: bool = True,
        groups: int = 1,
    ) -> None:
        require_neutral("conv", expand_ratio, se_ratio)
        super().__init__()
        self.conv = layers.conv(spatial_dims, in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        self.norm = layers.norm(norm, spatial_dims, out_channels)
        self.act = layers.act(act)
