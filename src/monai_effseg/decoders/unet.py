"""The nnU-Net decoder, with the block type as a parameter.

Per level (deepest first): transposed conv (kernel = stride) -> concat with the encoder skip -> a stage of
``blocks_per_stage`` registered blocks -> 1x1 segmentation head. With ``block="conv"`` this is nnU-Net's
``Generic_UNet`` decoder (Isensee et al., Nature Methods 2021), registered as ``"nnunet"`` (``"generic"``, after
``Generic_UNet``, is kept as an alias because bundle configs name it); with ``block="mbconv"`` it is the FullyEfficient
decoder of Martinho, "Efficient Algorithms for Medical Image Segmentation" (MSc thesis), section III.B.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, List, Union

import torch
from torch import nn

from monai_effseg.blocks import StageSpec, build_stage
from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec, conv, per_stage, transposed_conv
from monai_effseg.blocks.layers import act as act_layer
from monai_effseg.blocks.layers import norm as norm_layer
from monai_effseg.decoders.registry import DECODERS, register_decoder


@register_decoder("nnunet")
class UNetDecoder(nn.Module):
    """nnU-Net-style decoder over any encoder.

    Args:
        spatial_dims: 2 or 3.
        encoder_channels: the encoder's ``out_channels`` (highest resolution first; the last one is the bottleneck).
        encoder_strides: the encoder's ``strides``; level ``l`` upsamples by ``encoder_strides[l + 1]``.
        out_channels: number of classes.
        decoder_channels: width of each decoder level, highest resolution first. Defaults to the encoder's widths
            (nnU-Net); Martinho's thesis uses ``min(32 * 2**l, 320)`` on EfficientNet encoders.
        kernel_sizes: one kernel for every level, or one per level (highest resolution first).
        block, blocks_per_stage, expand_ratio, se_ratio: the registered block that each level stacks.
        deep_supervision: build a 1x1 head on every level and, while training, return all their logits (highest
            resolution first). Without it only the final head exists.
        deep_supervision_levels: with deep supervision, heads only on this many highest-resolution levels
            (Sauron's nnU-Net: 3). ``None``: every level.
        transpose_bias, head_bias: nnU-Net v1 ``Generic_UNet`` has neither; v2 ``PlainConvUNet`` has both.
        upsample_norm_act: follow every transposed conv with ``norm`` and ``act`` ("deConv3D + IN + LeakyReLU",
            Hao's section 3.2); nnU-Net has a bare transposed conv.
        block_kwargs: passed to every block (e.g. ``bias=True``).
    """

    def __init__(
        self,
        spatial_dims: int,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence,
        out_channels: int,
        decoder_channels: Sequence[int] | None = None,
        kernel_sizes=3,
        block: str = "conv",
        blocks_per_stage: int = 2,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        deep_supervision: bool = True,
        deep_supervision_levels: int | None = None,
        norm: LayerSpec = NNUNET_NORM,
        act: LayerSpec = NNUNET_ACT,
        transpose_bias: bool = False,
        head_bias: bool = False,
        upsample_norm_act: bool = False,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        levels = len(encoder_channels) - 1
        if levels < 1 or len(encoder_strides) != len(encoder_channels):
            raise ValueError("need >= 2 encoder features and one stride per feature")
        widths = list(encoder_channels[:-1] if decoder_channels is None else decoder_channels)
        if len(widths) != levels:
            raise ValueError(f"decoder_channels needs {levels} entries, got {widths}")
        kernels = per_stage(kernel_sizes, levels, "kernel_sizes")
        self.deep_supervision = deep_supervision
        self.out_channels = out_channels
        self.decoder_channels = widths

        ups, stages, heads = [], [], []
        below = encoder_channels[-1]
        for level in reversed(range(levels)):  # deepest first: the order forward() runs them
            up = transposed_conv(spatial_dims, below, widths[level], encoder_strides[level + 1], transpose_bias)
            if upsample_norm_act:
                up = nn.Sequential(up, norm_layer(norm, spatial_dims, widths[level]), act_layer(act))
            ups.append(up)
            row = StageSpec(
                block, blocks_per_stage, kernels[level], 1, expand_ratio,
                widths[level] + encoder_channels[level], widths[level], se_ratio,
            )  # fmt: skip
            stages.append(build_stage(row, spatial_dims, norm, act, **block_kwargs))
            supervised = deep_supervision and (deep_supervision_levels is None or level < deep_supervision_levels)
            if supervised or level == 0:
                heads.append(conv(spatial_dims, widths[level], out_channels, 1, bias=head_bias))
            below = widths[level]
        self.ups = nn.ModuleList(ups)
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    def forward(self, features: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        x = features[-1]
        skips = features[:-1]
        hidden: List[torch.Tensor] = []
        for i, (up, stage) in enumerate(zip(self.ups, self.stages)):
            # nnU-Net concatenates [upsampled, skip]
            x = stage(torch.cat([up(x), skips[len(skips) - 1 - i]], dim=1))
            hidden.append(x)
        if not (self.deep_supervision and self.training):
            return self.heads[-1](hidden[-1])
        logits: List[torch.Tensor] = []
        first = len(hidden) - len(self.heads)  # heads sit on the highest-resolution levels
        for i, head in enumerate(self.heads):  # TorchScript cannot zip a ModuleList with a list
            logits.append(head(hidden[first + i]))
        return logits[::-1]


DECODERS.alias("generic", "nnunet")  # the old name, still in bundle configs
