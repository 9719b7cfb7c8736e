"""PlainUNet: nnU-Net's 3d_fullres network (``Generic_UNet`` v1 / ``PlainConvUNet`` v2).

Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation",
Nature Methods 18, 2021. The KiTS configuration (6 stages, features 32-320) is the baseline of seeds 000 and 004.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec
from monai_effseg.decoders import UNetDecoder
from monai_effseg.encoders import generic_encoder
from monai_effseg.encoders.generic import NNUNET_FEATURES, per_stage
from monai_effseg.nets.base import EncoderDecoderNet
from monai_effseg.nets.registry import register_net


class PlainUNet(EncoderDecoderNet):
    """nnU-Net's plain-conv U-Net.

    Each stage is ``convs_per_stage`` x [conv (bias) -> InstanceNorm(affine) -> LeakyReLU(0.01)]; downsampling by the
    first conv's stride; upsampling by transposed convs; deep-supervision heads on every decoder level.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes, background included.
        features: width of each resolution stage, highest resolution first.
        kernel_sizes: one kernel for all stages or one per stage (int or per-axis tuple).
        strides: one per stage (int or per-axis tuple); ``None`` is 1 then 2 at every further stage.
        bias_convention: ``"v1"`` (``Generic_UNet``: no bias on transposed convs and heads; 31,196,384 parameters
            at 1 input channel and 4 classes) or ``"v2"`` (``PlainConvUNet``: bias everywhere; 31,197,204).
        block: the registered block of every stage (``"conv"``; ``"residual"`` for a residual variant).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = NNUNET_FEATURES,
        kernel_sizes=3,
        strides=None,
        convs_per_stage: int = 2,
        deep_supervision: bool = True,
        norm: LayerSpec = NNUNET_NORM,
        act: LayerSpec = NNUNET_ACT,
        bias_convention: str = "v1",
        block: str = "conv",
    ) -> None:
        if bias_convention not in ("v1", "v2"):
            raise ValueError(f"bias_convention must be 'v1' or 'v2', got {bias_convention!r}")
        v2 = bias_convention == "v2"
        encoder = generic_encoder(
            spatial_dims, in_channels, features, kernel_sizes, strides, convs_per_stage, block, norm, act
        )
        decoder = UNetDecoder(
            spatial_dims,
            encoder.out_channels,
            encoder.strides,
            out_channels,
            kernel_sizes=per_stage(kernel_sizes, len(features), "kernel_sizes")[:-1],
            block=block,
            blocks_per_stage=convs_per_stage,
            deep_supervision=deep_supervision,
            norm=norm,
            act=act,
            transpose_bias=v2,
            head_bias=v2,
        )
        super().__init__(encoder, decoder)


@register_net("nnunet")
def nnunet_kits(**overrides) -> PlainUNet:
    """The KiTS 3d_fullres configuration of seeds 000/004: 1 CT channel, 4 KiTS21 classes, 6 stages 32..320."""
    return PlainUNet(**{"spatial_dims": 3, "in_channels": 1, "out_channels": 4, **overrides})
