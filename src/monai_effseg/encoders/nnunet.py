"""The nnU-Net encoder: one stacked-conv stage per resolution, strided-conv downsampling.

Isensee et al., nnU-Net, Nature Methods 18, 2021 (3d_fullres ``Generic_UNet`` / ``PlainConvUNet``). Registered as
``"nnunet"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai_effseg.blocks import StageSpec
from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec, per_stage
from monai_effseg.encoders.registry import register_encoder
from monai_effseg.encoders.table import TableEncoder

NNUNET_FEATURES = (32, 64, 128, 256, 320, 320)


def default_strides(num_stages: int) -> list[int]:
    """Full resolution first, then halve at every stage (isotropic nnU-Net default)."""
    return [1] + [2] * (num_stages - 1)


def nnunet_stage_table(
    in_channels: int, features: Sequence[int], kernel_sizes, strides, convs_per_stage: int = 2, block: str = "conv"
) -> list[StageSpec]:
    """The nnU-Net encoder as a stage table: ``convs_per_stage`` blocks per resolution, the first one strided."""
    kernels = per_stage(kernel_sizes, len(features), "kernel_sizes")
    strides = per_stage(default_strides(len(features)) if strides is None else strides, len(features), "strides")
    widths = [in_channels, *features]
    return [
        StageSpec(block, convs_per_stage, kernels[i], strides[i], 1.0, widths[i], widths[i + 1])
        for i in range(len(features))
    ]


@register_encoder("nnunet")
def nnunet_encoder(
    spatial_dims: int = 3,
    in_channels: int = 1,
    features: Sequence[int] = NNUNET_FEATURES,
    kernel_sizes=3,
    strides=None,
    convs_per_stage: int = 2,
    block: str = "conv",
    norm: LayerSpec = NNUNET_NORM,
    act: LayerSpec = NNUNET_ACT,
    bias: bool = True,
) -> TableEncoder:
    """nnU-Net's encoder. ``kernel_sizes``/``strides``: one int for all stages or one entry per stage (int or per-axis tuple);
    ``strides=None`` is 1 then 2 for every further stage.
    ``block="residual"`` gives the residual encoder of Hao's cascade thesis / nnU-Net ResEnc."""
    table = nnunet_stage_table(in_channels, features, kernel_sizes, strides, convs_per_stage, block)
    return TableEncoder(spatial_dims, table, norm=norm, act=act, bias=bias)
