"""The FullyEfficient decoder of Martinho, "Efficient Algorithms for Medical Image Segmentation" (MSc thesis), section
III.B, Fig. 8: nnU-Net's decoder with every level's two convs replaced by two MBConv blocks (kernel from the level,
expand 6, SE 0.25). Upsampling stays nnU-Net's transposed conv, followed by the concatenation with the skip.

The thesis does not name the decoder's norm and activation; we keep nnU-Net's InstanceNorm (batches of 2 patches)
with EfficientNet's SiLU. Neither changes the parameter or FLOP counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.silu import EFFICIENTNET_ACT, FULLY_EFFICIENT_NORM
from monai_effseg.decoders.registry import register_decoder
from monai_effseg.decoders.unet import UNetDecoder


@register_decoder("mbconv")
def fully_efficient_decoder(
    spatial_dims: int,
    encoder_channels: Sequence[int],
    encoder_strides: Sequence,
    out_channels: int,
    decoder_channels: Sequence[int] | None = None,
    kernel_sizes=3,
    blocks_per_stage: int = 2,
    expand_ratio: float = 6.0,
    se_ratio: float = 0.25,
    deep_supervision: bool = True,
    norm: LayerSpec = FULLY_EFFICIENT_NORM,
    act: LayerSpec = EFFICIENTNET_ACT,
    transpose_bias: bool = False,
    head_bias: bool = False,
    **block_kwargs: Any,
) -> UNetDecoder:
    """:class:`UNetDecoder` with ``block="mbconv"`` and the thesis' MBConv settings (see the module docstring)."""
    return UNetDecoder(
        spatial_dims,
        encoder_channels,
        encoder_strides,
        out_channels,
        decoder_channels=decoder_channels,
        kernel_sizes=kernel_sizes,
        block="mbconv",
        blocks_per_stage=blocks_per_stage,
        expand_ratio=expand_ratio,
        se_ratio=se_ratio,
        deep_supervision=deep_supervision,
        norm=norm,
        act=act,
        transpose_bias=transpose_bias,
        head_bias=head_bias,
        **block_kwargs,
    )
