"""PlainUNet: nnU-Net's 3d_fullres network (``Generic_UNet`` v1 / ``PlainConvUNet`` v2), and the one configurable
U-Net that every nnU-Net-style network of the zoo is a preset of.

Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation",
Nature Methods 18, 2021. The KiTS configuration (6 stages, features 32-320) is the baseline of the EfficientNet and
Sauron papers. Its presets, each a subclass that only changes defaults (as MONAI's ``DynUNet`` flags do):
:class:`~monai_effseg.nets.MSSUNet` (MSS U-Net plan), :class:`~monai_effseg.nets.ResidualUNet` (Hao's residual
U-Net: ``block="residual"``, norm + activation after upsampling, biased heads) and
:class:`~monai_effseg.pruning.SauronUNet` (5 levels, 3 supervised levels, He-normal init, prunable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec, he_normal_init, per_stage
from monai_effseg.decoders import UNetDecoder
from monai_effseg.encoders import nnunet_encoder
from monai_effseg.encoders.nnunet import NNUNET_FEATURES
from monai_effseg.nets.base import EncoderDecoderNet
from monai_effseg.nets.registry import register_net

INITS = ("pytorch", "he_normal")


class PlainUNet(EncoderDecoderNet):
    """nnU-Net-style U-Net.

    Each stage is ``blocks_per_stage`` registered blocks (``block="conv"``: conv (bias) -> InstanceNorm(affine) ->
    LeakyReLU(0.01)); downsampling by the first block's stride; upsampling by transposed convs; 1x1 heads on the
    supervised decoder levels.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes, background included.
        features: width of each resolution stage, highest resolution first.
        kernel_sizes: one kernel for all stages or one per stage (int or per-axis tuple).
        strides: one per stage (int or per-axis tuple); ``None`` is 1 then 2 at every further stage.
        blocks_per_stage: blocks per stage in encoder and decoder (a ``"conv"`` block is one conv, a ``"residual"``
            block two).
        deep_supervision: return the heads' logits (highest resolution first) while training.
        deep_supervision_levels: with deep supervision, heads only on this many highest-resolution decoder levels;
            ``None``: on every level.
        norm, act: MONAI layer specs of every block.
        bias_convention: ``"v1"`` (``Generic_UNet``: no bias on transposed convs and heads; 31,196,384 parameters
            at 1 input channel and 4 classes) or ``"v2"`` (``PlainConvUNet``: bias everywhere; 31,197,204).
        head_bias: overrides the convention for the heads only (``None``: follow it).
        block: the registered block of every stage (``"conv"``; ``"residual"`` for a residual U-Net).
        upsample_norm_act: follow every transposed conv with ``norm`` and ``act``.
        init: ``"pytorch"`` (PyTorch's default) or ``"he_normal"`` (He-normal weights, zero biases).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = NNUNET_FEATURES,
        kernel_sizes=3,
        strides=None,
        blocks_per_stage: int = 2,
        deep_supervision: bool = True,
        deep_supervision_levels: Optional[int] = None,
        norm: LayerSpec = NNUNET_NORM,
        act: LayerSpec = NNUNET_ACT,
        bias_convention: str = "v1",
        head_bias: Optional[bool] = None,
        block: str = "conv",
        upsample_norm_act: bool = False,
        init: str = "pytorch",
    ) -> None:
        if bias_convention not in ("v1", "v2"):
            raise ValueError(f"bias_convention must be 'v1' or 'v2', got {bias_convention!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        v2 = bias_convention == "v2"
        encoder = nnunet_encoder(
            spatial_dims, in_channels, features, kernel_sizes, strides, blocks_per_stage, block, norm, act
        )
        decoder = UNetDecoder(
            spatial_dims,
            encoder.out_channels,
            encoder.strides,
            out_channels,
            kernel_sizes=per_stage(kernel_sizes, len(features), "kernel_sizes")[:-1],
            block=block,
            blocks_per_stage=blocks_per_stage,
            deep_supervision=deep_supervision,
            deep_supervision_levels=deep_supervision_levels,
            norm=norm,
            act=act,
            transpose_bias=v2,
            head_bias=v2 if head_bias is None else head_bias,
            upsample_norm_act=upsample_norm_act,
        )
        super().__init__(encoder, decoder)
        if init == "he_normal":
            he_normal_init(self)


@register_net("nnunet")
def nnunet_kits(**overrides) -> PlainUNet:
    """KiTS 3d_fullres of Martinho's thesis and the Sauron paper: 1 CT channel, 4 KiTS21 classes, 6 stages 32..320."""
    return PlainUNet(**{"spatial_dims": 3, "in_channels": 1, "out_channels": 4, **overrides})
