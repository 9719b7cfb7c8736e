"""ResidualUNet: the 3D U-Net of Hao ("Deep Learning-Based Cascade 3D Kidney Segmentation Method", MSc
thesis, University of Melbourne 2024, section 3.2 and Figure 3.2), with the ablations of its Table 4.2.

"The improved model adds residual blocks and deep supervision, and uses instance [normalization] and LeakyReLU":
encoder stages of residual blocks whose first conv strides by 2 ("Conv3D stride 2 + IN + LeakyReLU"), decoder
levels of transposed conv + IN + LeakyReLU ("deConv3D + IN + LeakyReLU"), concatenation with the skip, residual
blocks, and a 1x1 head per decoder level whose losses L1..L5 are weighted and summed (deep supervision).

The thesis gives neither widths, depth nor block counts. We use nnU-Net's KiTS layout (6 resolution levels,
32..320 features), which yields exactly the five supervised decoder outputs L1..L5 of its Figure 3.2, and one
residual block (two convs) per level, so that ``residual=False`` ("PM without Res") is the same network without
the shortcuts. A preset of :class:`~monai_effseg.nets.PlainUNet` (``block="residual"``); no second U-Net.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec
from monai_effseg.encoders.nnunet import NNUNET_FEATURES
from monai_effseg.nets.plain_unet import PlainUNet
from monai_effseg.nets.registry import register_net

__all__ = ["KITS19_KERNELS", "KITS19_STRIDES", "TABLE_4_2_ABLATIONS", "ResidualUNet"]

# nnU-Net's plan for KiTS19 at its median spacing 0.78 x 0.78 x 3 mm (x, y, z): in-plane-only kernel and pooling
# until the voxels are near-isotropic (the MSS U-Net authors' plans, tests/data/reference/methods.md section 2).
KITS19_KERNELS = ((3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
KITS19_STRIDES = (1, (2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))

# Table 4.2 rows as constructor switches.
TABLE_4_2_ABLATIONS = {
    "PM": {"residual": True, "deep_supervision": True},
    "PM without Res": {"residual": False, "deep_supervision": True},
    "PM without Res and DS": {"residual": False, "deep_supervision": False},
}


class ResidualUNet(PlainUNet):
    """3D U-Net with residual blocks in encoder and decoder and deep supervision (Hao): a
    :class:`~monai_effseg.nets.PlainUNet` preset.

    Args:
        spatial_dims: 2 or 3.
        in_channels: 1 for a CT; 2 for the cascade's second stage (CT + stage-1 segmentation).
        out_channels: classes, background included (KiTS19: 3).
        features: width of each resolution level, highest resolution first.
        kernel_sizes, strides: one per level (int or per-axis tuple); ``strides=None`` is 1 then 2 everywhere.
        residual: residual blocks (``True``) or plain conv-IN-LeakyReLU pairs (Table 4.2 "without Res").
        deep_supervision: heads on every decoder level, returned highest resolution first while training
            (Table 4.2 "without DS": ``False``).
        blocks_per_stage: residual blocks per level (each has two convs).
        norm, act: MONAI layer specs (default InstanceNorm(affine), LeakyReLU(0.01)).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 3,
        features: Sequence[int] = NNUNET_FEATURES,
        kernel_sizes=3,
        strides=None,
        residual: bool = True,
        deep_supervision: bool = True,
        blocks_per_stage: int = 1,
        norm: LayerSpec = NNUNET_NORM,
        act: LayerSpec = NNUNET_ACT,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            kernel_sizes=kernel_sizes,
            strides=strides,
            blocks_per_stage=blocks_per_stage if residual else 2 * blocks_per_stage,  # keep the number of convs
            deep_supervision=deep_supervision,
            norm=norm,
            act=act,
            bias_convention="v1",  # no transposed-conv bias: an InstanceNorm follows and would cancel it
            head_bias=True,
            block="residual" if residual else "conv",
            upsample_norm_act=True,  # "deConv3D + IN + LeakyReLU"
        )
        self.residual = residual


@register_net("residual_unet_kits19", profile_input=(1, 192, 192, 48))
def residual_unet_kits19(**overrides) -> ResidualUNet:
    """Hao's network at KiTS19's median spacing: 1 CT channel, 3 classes, 6 levels 32..320, anisotropic plan."""
    return ResidualUNet(**{"kernel_sizes": KITS19_KERNELS, "strides": KITS19_STRIDES, **overrides})
