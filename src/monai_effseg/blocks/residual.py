"""The residual block of Hao's 3D U-Net (Hao, "Deep Learning-Based Cascade 3D Kidney Segmentation Method",
MSc thesis, University of Melbourne 2024, section 3.2).

The thesis adds "residual blocks [...] to both the encoder and decoder to prevent gradient vanishing", with IN and
LeakyReLU, but its Figure 3.2 is the only description of the block. We use the ResNet basic block (He et al., CVPR
2016) in the form nnU-Net's residual encoders use (Isensee & Maier-Hein, "An attempt at beating the 3D U-Net",
arXiv:1908.02182, the KiTS19 winner; nnU-Net v2 ``BasicBlockD`` without its avg-pool shortcut)::

    y = act( norm(conv_k(act(norm(conv_k,stride(x))))) + shortcut(x) )

``shortcut`` is the identity when the block keeps the size and width, else a strided 1x1 conv + norm (projection).
Two k x k convs per block, so one residual block per stage has the conv layout of nnU-Net's two-conv plain stage:
the "without residuals" ablation of the thesis' Table 4.2 is then the same network minus the shortcuts.
"""

from __future__ import annotations

import torch
from monai.utils import ensure_tuple
from torch import nn

from monai_effseg.blocks import layers
from monai_effseg.blocks.conv import ConvNormAct
from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec
from monai_effseg.blocks.registry import KernelOrStride, register_block, require_neutral

__all__ = ["BasicResidualBlock"]


@register_block("residual")
class BasicResidualBlock(nn.Module):
    """conv-norm-act -> conv-norm, plus the identity (or a 1x1 conv-norm projection), then act.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: widths; a change of width uses the projection shortcut.
        kernel_size: kernel of both convs (int or per axis, e.g. ``(3, 3, 1)``).
        stride: stride of the first conv and of the projection (downsampling inside the block).
        expand_ratio, se_ratio: must be neutral (1, 0): the block has neither.
        norm, act: MONAI layer specs (default nnU-Net's InstanceNorm(affine) and LeakyReLU(0.01)).
        bias: bias of the two k x k convs (nnU-Net convention: yes; the projection never has one, a norm follows).
    """

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
    ) -> None:
        require_neutral("residual", expand_ratio, se_ratio)
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, norm=norm, act=act,
                                 bias=bias)  # fmt: skip
        self.conv2 = layers.conv(spatial_dims, out_channels, out_channels, kernel_size, 1, bias=bias)
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)
        self.shortcut: nn.Module
        if in_channels == out_channels and all(s == 1 for s in ensure_tuple(stride)):
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                layers.conv(spatial_dims, in_channels, out_channels, 1, stride, bias=False),
                layers.norm(norm, spatial_dims, out_channels),
            )
        self.act = layers.act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))
