"""The block registry: an architecture is a table of :class:`StageSpec` rows; :func:`build_stage` turns a row into
modules (the timm EfficientNet-builder idea, applied to every family in this package).

Every registered block has the signature::

    Block(spatial_dims, in_channels, out_channels, kernel_size, stride, expand_ratio, se_ratio, norm, act, **extra)

Blocks that have no use for ``expand_ratio`` or ``se_ratio`` reject values other than the neutral ones, so a table
row can never silently mean something it does not do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

from torch import nn

from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec
from monai_effseg.registry import Registry

BLOCKS = Registry("block")
register_block = BLOCKS.register

KernelOrStride = Union[int, Sequence[int]]


@dataclass(frozen=True)
class StageSpec:
    """One table row: ``repeats`` blocks of type ``block``. Only the first block strides and changes the width.

    ``extra`` carries block-specific options (e.g. ``{"act": "hardswish"}`` for a MobileNetV3 row).
    """

    block: str
    repeats: int
    kernel: KernelOrStride
    stride: KernelOrStride
    expand: float
    in_channels: int
    out_channels: int
    se: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_channels(self, in_channels: int, out_channels: int) -> StageSpec:
        return replace(self, in_channels=in_channels, out_channels=out_channels)


def build_block(
    name: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: KernelOrStride = 3,
    stride: KernelOrStride = 1,
    expand_ratio: float = 1.0,
    se_ratio: float = 0.0,
    norm: LayerSpec = NNUNET_NORM,
    act: LayerSpec = NNUNET_ACT,
    **extra: Any,
) -> nn.Module:
    """Build one registered block by name."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return BLOCKS.get(name)(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        stride=stride,
        expand_ratio=expand_ratio,
        se_ratio=se_ratio,
        norm=norm,
        act=act,
        **extra,
    )


def build_stage(
    spec: StageSpec, spatial_dims: int, norm: LayerSpec = NNUNET_NORM, act: LayerSpec = NNUNET_ACT, **extra: Any
) -> nn.Sequential:
    """Turn one table row into ``spec.repeats`` blocks. Row-level ``extra`` overrides the call's ``extra``."""
    if spec.repeats < 1:
        raise ValueError(f"a stage needs at least one block, got repeats={spec.repeats} in {spec}")
    options = {"norm": norm, "act": act, **extra, **spec.extra}
    blocks = [
        build_block(
            spec.block,
            spatial_dims,
            spec.in_channels if i == 0 else spec.out_channels,
            spec.out_channels,
            kernel_size=spec.kernel,
            stride=spec.stride if i == 0 else 1,
            expand_ratio=spec.expand,
            se_ratio=spec.se,
            **options,
        )
        for i in range(spec.repeats)
    ]
    return nn.Sequential(*blocks)


def require_neutral(block: str, expand_ratio: float, se_ratio: float) -> None:
    """Raise if a table row asks a block for an expansion or SE that it does not implement."""
    if expand_ratio != 1 or se_ratio != 0:
        raise ValueError(f"block {block!r} has no expansion or SE; got expand={expand_ratio}, se={se_ratio}")
