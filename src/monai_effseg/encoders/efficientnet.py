"""EfficientNet b0-b7 and EfficientNetV2 S/M/L encoders as stage tables, with Martinho's U-Net modifications.

Architectures: Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019 (table 1, compound scaling) and
"EfficientNetV2: Smaller Models and Faster Training", ICML 2021 (tables 4 and 7). Modifications: Martinho, "Efficient
Algorithms for Medical Image Segmentation" (MSc thesis), section III.A:

- the stem conv has stride 1 (a full-resolution skip) and the first block stage takes over its stride 2;
- the ImageNet head (1x1 conv, pooling, FC) is pruned; it is not built here, only counted by :func:`imagenet_head_params`
  because the thesis' Table 1 counted it;
- 6 feature maps for 5 downsamplings: the stem, the last stage before every stride-2 stage, and the last stage.

The architecture is data (:class:`EfficientNetArch` rows); :func:`efficientnet_stage_table` turns it into the
:class:`~monai_effseg.blocks.StageSpec` rows that :class:`~monai_effseg.encoders.TableEncoder` builds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple

from monai_effseg.blocks import StageSpec
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.se import make_divisible
from monai_effseg.blocks.silu import EFFICIENTNET_ACT, EFFICIENTNET_NORM
from monai_effseg.encoders.registry import ENCODERS
from monai_effseg.encoders.table import TableEncoder


class Row(NamedTuple):
    """One stage of a published EfficientNet table (the input width is the previous row's ``out_channels``)."""

    block: str
    repeats: int
    kernel: int
    stride: int
    expand: float
    out_channels: int
    se: float


@dataclass(frozen=True)
class EfficientNetArch:
    """An ImageNet EfficientNet as published: stem conv3 (stride 2) -> block stages -> head conv1x1 -> pool -> FC.

    ``stages`` may be given as plain tuples in :class:`Row` order; they are stored as :class:`Row`."""

    stem: int
    stages: tuple[Row, ...]
    head: int
    se_divisor: int = 1  # 8: the d-li14 port's make_divisible(in // 4, 8) squeeze width
    stem_stride: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(Row(*row) for row in self.stages))


# block, repeats, kernel, stride, expand, out, se
EFFICIENTNET_B0 = EfficientNetArch(
    stem=32,
    stages=(
        ("ds", 1, 3, 1, 1, 16, 0.25),
        ("mbconv", 2, 3, 2, 6, 24, 0.25),
        ("mbconv", 2, 5, 2, 6, 40, 0.25),
        ("mbconv", 3, 3, 2, 6, 80, 0.25),
        ("mbconv", 3, 5, 1, 6, 112, 0.25),
        ("mbconv", 4, 5, 2, 6, 192, 0.25),
        ("mbconv", 1, 3, 1, 6, 320, 0.25),
    ),
    head=1280,
)

# name: (width, depth) coefficients of b0..b7 (Tan & Le 2019, section 3.3; as in timm and MONAI)
EFFICIENTNET_COEFFICIENTS: dict[str, tuple[float, float]] = {
    "b0": (1.0, 1.0),
    "b1": (1.0, 1.1),
    "b2": (1.1, 1.2),
    "b3": (1.2, 1.4),
    "b4": (1.4, 1.8),
    "b5": (1.6, 2.2),
    "b6": (1.8, 2.6),
    "b7": (2.0, 3.1),
}

# The official EfficientNetV2 (Tan & Le 2021, table 4; appendix for M and L; google/automl effnetv2_configs.py)
EFFICIENTNETV2 = {
    "s": EfficientNetArch(
        stem=24,
        stages=(
            ("cn", 2, 3, 1, 1, 24, 0.0),
            ("fused_mbconv", 4, 3, 2, 4, 48, 0.0),
            ("fused_mbconv", 4, 3, 2, 4, 64, 0.0),
            ("mbconv", 6, 3, 2, 4, 128, 0.25),
            ("mbconv", 9, 3, 1, 6, 160, 0.25),
            ("mbconv", 15, 3, 2, 6, 256, 0.25),
        ),
        head=1280,
    ),
    "m": EfficientNetArch(
        stem=24,
        stages=(
            ("cn", 3, 3, 1, 1, 24, 0.0),
            ("fused_mbconv", 5, 3, 2, 4, 48, 0.0),
            ("fused_mbconv", 5, 3, 2, 4, 80, 0.0),
            ("mbconv", 7, 3, 2, 4, 160, 0.25),
            ("mbconv", 14, 3, 1, 6, 176, 0.25),
            ("mbconv", 18, 3, 2, 6, 304, 0.25),
            ("mbconv", 5, 3, 1, 6, 512, 0.25),
        ),
        head=1280,
    ),
    "l": EfficientNetArch(
        stem=32,
        stages=(
            ("cn", 4, 3, 1, 1, 32, 0.0),
            ("fused_mbconv", 7, 3, 2, 4, 64, 0.0),
            ("fused_mbconv", 7, 3, 2, 4, 96, 0.0),
            ("mbconv", 10, 3, 2, 4, 192, 0.25),
            ("mbconv", 19, 3, 1, 6, 224, 0.25),
            ("mbconv", 25, 3, 2, 6, 384, 0.25),
            ("mbconv", 7, 3, 1, 6, 640, 0.25),
        ),
        head=1280,
    ),
}


def compound_scaled(arch: EfficientNetArch, width: float = 1.0, depth: float = 1.0) -> EfficientNetArch:
    """Compound scaling: widths ``make_divisible(c * width, 8)`` (``round_filters``), repeats ``ceil(r * depth)``."""
    if width == 1.0 and depth == 1.0:
        return arch
    stages = tuple(
        row._replace(repeats=math.ceil(row.repeats * depth), out_channels=make_divisible(row.out_channels * width, 8))
        for row in arch.stages
    )
    return replace(
        arch, stem=make_divisible(arch.stem * width, 8), stages=stages, head=make_divisible(arch.head * width, 8)
    )


def dli14_port(arch: EfficientNetArch) -> EfficientNetArch:
    """The d-li14 "EfficientNetV2.pytorch" port that Martinho's Table 1 counts (tests/data/reference/architectures.md
    section 4): a 24-channel stem for every size, Fused-MBConv with expand 1 (kxk + 1x1) in place of the single-conv
    ``cn``, squeeze width ``make_divisible(in // 4, 8)`` and a 1792-wide head."""
    stages = tuple(row._replace(block="fused_mbconv") if row.block == "cn" else row for row in arch.stages)
    return replace(arch, stem=24, stages=stages, head=1792, se_divisor=8)


def efficientnet_arch(name: str, flavour: str = "dli14") -> EfficientNetArch:
    """``"b0"``..``"b7"`` or ``"v2-s"``/``"v2-m"``/``"v2-l"``. ``flavour`` (V2 only): ``"dli14"`` (what the thesis used)
    or ``"official"`` (the paper / timm / google-automl)."""
    if name in EFFICIENTNET_COEFFICIENTS:
        width, depth = EFFICIENTNET_COEFFICIENTS[name]
        return compound_scaled(EFFICIENTNET_B0, width, depth)
    size = name.removeprefix("v2-")
    if size not in EFFICIENTNETV2:
        raise KeyError(f"unknown EfficientNet {name!r}; known: {list(EFFICIENTNET_COEFFICIENTS)} + v2-s/m/l")
    if flavour not in ("dli14", "official"):
        raise ValueError(f"flavour must be 'dli14' or 'official', got {flavour!r}")
    return dli14_port(EFFICIENTNETV2[size]) if flavour == "dli14" else EFFICIENTNETV2[size]


def efficientnet_stage_table(arch: EfficientNetArch, in_channels: int, stem_stride_to_first_stage: bool = True):
    """Stage rows (stem first). With ``stem_stride_to_first_stage`` (Martinho) the stem keeps the resolution and the
    first block stage strides instead."""
    stem_stride, first_stride = arch.stem_stride, arch.stages[0].stride
    if stem_stride_to_first_stage:
        stem_stride, first_stride = 1, first_stride * arch.stem_stride
    rows = [StageSpec("conv", 1, 3, stem_stride, 1.0, in_channels, arch.stem, extra={"bias": False})]
    width = arch.stem
    for i, (block, repeats, kernel, stride, expand, out, se) in enumerate(arch.stages):
        extra = {"se_divisor": arch.se_divisor} if block != "cn" else {}
        rows.append(
            StageSpec(block, repeats, kernel, first_stride if i == 0 else stride, expand, width, out, se, extra)
        )
        width = out
    return rows


def skip_stages(rows) -> list[int]:
    """The rows whose outputs are skip features: each resolution's last row, i.e. the last row and every row followed
    by a strided one (Martinho's Fig. 7: b0 gives the stem, stages 1, 2, 3, 5 and 7)."""
    strided = [any(s != 1 for s in (row.stride if isinstance(row.stride, tuple) else (row.stride,))) for row in rows]
    return [i for i in range(len(rows)) if i == len(rows) - 1 or strided[i + 1]]


def imagenet_head_params(arch: EfficientNetArch, num_classes: int = 1000) -> int:
    """Parameters of the pruned ImageNet head: 1x1 conv (no bias) to ``arch.head``, BatchNorm, FC with bias."""
    last = arch.stages[-1].out_channels
    return last * arch.head + 2 * arch.head + arch.head * num_classes + num_classes


class EfficientNetEncoder(TableEncoder):
    """An EfficientNet(V2) stage table built by :class:`TableEncoder`; six features for five downsamplings.

    Attributes:
        arch: the (scaled) architecture.
        imagenet_head_params: parameters of the ImageNet head Martinho's thesis counted but never ran (not built here).
    """

    def __init__(
        self,
        arch: EfficientNetArch,
        spatial_dims: int = 3,
        in_channels: int = 1,
        norm: LayerSpec = EFFICIENTNET_NORM,
        act: LayerSpec = EFFICIENTNET_ACT,
        drop_connect_rate: float = 0.2,
        stem_stride_to_first_stage: bool = True,
    ) -> None:
        rows = efficientnet_stage_table(arch, in_channels, stem_stride_to_first_stage)
        super().__init__(spatial_dims, rows, skip_stages(rows), norm=norm, act=act)
        self.arch = arch
        self.imagenet_head_params = imagenet_head_params(arch)
        blocks = [block for stage in self.stages[1:] for block in stage]
        for i, block in enumerate(blocks):  # stochastic depth grows linearly with depth (EfficientNet, timm, MONAI)
            block.drop_path.drop_prob = drop_connect_rate * i / len(blocks)


def efficientnet_encoder(
    name: str,
    spatial_dims: int = 3,
    in_channels: int = 1,
    width_coefficient: float = 1.0,
    depth_coefficient: float = 1.0,
    flavour: str = "dli14",
    norm: LayerSpec = EFFICIENTNET_NORM,
    act: LayerSpec = EFFICIENTNET_ACT,
    drop_connect_rate: float = 0.2,
    stem_channels: int | None = None,
) -> EfficientNetEncoder:
    """An EfficientNet encoder with Martinho's modifications, by name (``"b0"``, ``"v2-s"``, ...).

    ``width_coefficient``/``depth_coefficient`` scale it further (on top of b0..b7's own coefficients), e.g. to make a
    CPU demo small. ``stem_channels`` overrides the stem width (before that scaling): ``efficientnetv2-l`` with 32 is
    the reference sketch's V2-L (the official stem inside the d-li14 port; see docs/efficientnet.md)."""
    arch = efficientnet_arch(name, flavour)
    if stem_channels is not None:
        arch = replace(arch, stem=stem_channels)
    arch = compound_scaled(arch, width_coefficient, depth_coefficient)
    return EfficientNetEncoder(arch, spatial_dims, in_channels, norm, act, drop_connect_rate)


EFFICIENTNET_ENCODERS: dict[str, str] = {
    **{f"efficientnet-{b}": b for b in EFFICIENTNET_COEFFICIENTS},
    **{f"efficientnetv2-{s}": f"v2-{s}" for s in EFFICIENTNETV2},
}
"""Registered encoder name -> :func:`efficientnet_arch` name."""

for _registered, _arch in EFFICIENTNET_ENCODERS.items():
    ENCODERS.add(_registered, partial(efficientnet_encoder, _arch))
