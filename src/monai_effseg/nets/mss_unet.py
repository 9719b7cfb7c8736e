"""MSS U-Net: the multi-scale supervised 3D U-Net of Zhao, Jiang, Pena Queralta, Westerlund ("MSS U-Net:
3D segmentation of kidneys and tumors from CT images with a multi-scale supervised U-Net", Informatics in Medicine
Unlocked 19, 100357, 2020; KiTS19 7th place).

The paper builds on nnU-Net's 3D U-Net: strided-conv downsampling, transposed-conv upsampling, instance norm, and
a supervised 1x1 output on each of the 5 decoder levels ("the total 5 layers excluding the bottleneck", section
II.E). The layout comes from the authors' nnU-Net v1 plans (tests/data/reference/methods.md section 2): 6
resolution levels with 30, 60, 120, 240, 320, 320 features, kernels [3,3,1] then [3,3,3] x 5, pooling [2,2,1] x 2
then [2,2,2] x 3, for patches of 192 x 192 x 48 (x, y, z) at 0.78 x 0.78 x 3 mm, i.e. our RAS array order.
``Generic_UNet`` v1 bias convention: convs with bias, transposed convs and heads without.

The "classic 3D U-Net" of the paper's Tables II and III is the same network without the multi-scale supervision
(``deep_supervision=False``), trained without the exp-log loss and used without post-processing.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec
from monai_effseg.nets.plain_unet import PlainUNet
from monai_effseg.nets.registry import register_net

__all__ = ["MSS_FEATURES", "MSS_KERNELS", "MSS_PATCH_SIZE", "MSS_STRIDES", "MSSUNet"]

MSS_FEATURES = (30, 60, 120, 240, 320, 320)
MSS_KERNELS = ((3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
MSS_STRIDES = (1, (2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))
MSS_PATCH_SIZE = (192, 192, 48)


class MSSUNet(PlainUNet):
    """The MSS U-Net (Zhao et al.): nnU-Net's plain 3D U-Net with the authors' KiTS19 plan and 5 supervised outputs.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes, background included (KiTS19: 3).
        features, kernel_sizes, strides: per resolution level, highest resolution first (default: the paper's).
        deep_supervision: the multi-scale supervision; ``False`` gives the paper's classic 3D U-Net baseline.
        norm, act: MONAI layer specs (InstanceNorm(affine), LeakyReLU(0.01) as ``Generic_UNet``).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 3,
        features: Sequence[int] = MSS_FEATURES,
        kernel_sizes=MSS_KERNELS,
        strides=MSS_STRIDES,
        deep_supervision: bool = True,
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
            blocks_per_stage=2,
            deep_supervision=deep_supervision,
            norm=norm,
            act=act,
            bias_convention="v1",
        )


@register_net("mss_unet", profile_input=(1, *MSS_PATCH_SIZE))
def mss_unet(**overrides) -> MSSUNet:
    """MSS U-Net for KiTS19: 1 CT channel, 3 classes, profiled at its 192 x 192 x 48 training patch."""
    return MSSUNet(**overrides)
