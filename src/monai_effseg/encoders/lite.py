"""The lightweight encoders of Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on 2D and 3D Deep
Neural Networks" (thesis, 2020): every stage table A.3-A.23 as a named preset, encoded as data.

A family lists its columns once (kernel, stride, expansion, widths, SE: identical within a family) and each table
only its *repetitions*, the one column the top/default/bottom sets change ("the top set increases the shallower
layers, whereas the bottom set increases the deeper layers", section 4.1.1). :func:`preset_rows` expands a preset
into the printed table (one :class:`~monai_effseg.blocks.StageSpec` per row), and :func:`lite_encoder` builds it:
the stem (a strided 3x3 conv, the "stem block" of section 3.1.4) followed by the rows, through the block registry.

Readings of the tables (docs/deviations.md lists each with its reason):

- "top" = the tables "focusing resources on the shallower layers", "bottom" = "on the deeper layers" (section 4.1.1).
- A.18 (3D ShuffleNetV2 default) prints the 2D table A.9 (2D strides, 2D widths). We keep its rows and widths and
  lift the strides to 3D the way every other 3D table does: (1,1,1), (1,2,2), (2,2,2), (2,2,2), (1,1,1), (1,2,2),
  (1,1,1).
- A.19 and A.20 have swapped captions: A.20 ("shallower") puts 4-5 blocks in every deep stage and A.19 ("deeper")
  two in the first, and Table 4.3 ranks the 3D ShuffleNetV2 top < bottom in parameters, as A.19 < A.20 (LiteUNet:
  1.57M < 1.84M). So ``shufflenetv2-3d-top`` = A.19 and ``shufflenetv2-3d-bottom`` = A.20. Table 4.3's default
  (A.18) between them is not reproduced: its LiteUNet has 1.48M, the fewest (docs/deviations.md, LiTS fidelity).
- A.21-A.23 (DSTS) print an "Expansion Ratio" header without values: DSTS has no expansion.
- MobileNetV3 activations (not in the tables): MobileNetV3-Large's, ReLU up to the 40-channel stage, h-swish from
  the 80-channel stage on, h-swish in the stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Optional

from monai.utils import ensure_tuple

from monai_effseg.blocks import StageSpec
from monai_effseg.blocks.dsts import DSTS_ACT
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.mobilenet import LITE_NORM, MOBILENETV2_ACT, MOBILENETV3_ACTS
from monai_effseg.blocks.shufflenet import SHUFFLENET_ACT
from monai_effseg.encoders.registry import register_encoder
from monai_effseg.encoders.table import TableEncoder

__all__ = ["FAMILIES", "PRESETS", "SLABS", "Slab", "LiteFamily", "LitePreset", "lite_encoder", "preset_rows"]

S2 = [1, 2, 2, 2, 1, 2, 1]
S3 = [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1), (1, 2, 2), (1, 1, 1)]
KERNELS = [3, 3, 5, 3, 5, 5, 3]
MBV2_EXPAND = [1, 6, 6, 6, 6, 6, 6]
MBV3_EXPAND = [1, 4, 3, 3, 6, 6, 6]
MBV3_SE = [0.0, 0.0, 0.25, 0.0, 0.25, 0.25, 0.25]
MBV3_ACTS = ["relu", "relu", "relu", "hardswish", "hardswish", "hardswish", "hardswish"]
WIDTHS_2D = [32, 16, 24, 40, 80, 112, 192, 320]


class Slab(NamedTuple):
    """Slices a slab network takes in and predicts."""

    in_slices: int
    out_slices: int


# per spatial_dims (Tustumi's section 3.1.2): 2.5D takes 9 slices as channels and predicts the middle one; 3D takes a
# slab of 8 and predicts its middle 4.
SLABS = {2: Slab(in_slices=9, out_slices=1), 3: Slab(in_slices=8, out_slices=4)}


@dataclass(frozen=True)
class LiteFamily:
    """The columns a family's tables share: ``widths`` = stem width (the first row's input) then each row's output."""

    block: str
    spatial_dims: int
    kernels: Sequence[int]
    strides: Sequence[Any]
    expand: Sequence[float]
    widths: Sequence[int]
    se: Sequence[float]
    act: LayerSpec
    stem_act: LayerSpec
    row_acts: Optional[Sequence[str]] = None


@dataclass(frozen=True)
class LitePreset:
    """One table: its family, its repetitions and where it is printed."""

    family: str
    repeats: Sequence[int]
    table: str
    caption: str


def _family(block, dims, widths, expand=(1,) * 7, se=(0.25,) * 7, act=MOBILENETV2_ACT, stem_act=None, row_acts=None):
    strides = S2 if dims == 2 else S3
    return LiteFamily(block, dims, KERNELS, strides, expand, widths, se, act, stem_act or act, row_acts)


FAMILIES: dict[str, LiteFamily] = {
    "mobilenetv2-2d": _family("inverted_residual", 2, WIDTHS_2D, MBV2_EXPAND),
    "mobilenetv3-2d": _family("mobilenetv3", 2, WIDTHS_2D, MBV3_EXPAND, MBV3_SE, MOBILENETV3_ACTS["hardswish"],
                              row_acts=MBV3_ACTS),
    "shufflenetv2-2d": _family("shufflenetv2", 2, WIDTHS_2D, act=SHUFFLENET_ACT),
    "mobilenetv2-3d": _family("inverted_residual", 3, [16, 8, 12, 20, 40, 56, 96, 160], MBV2_EXPAND),
    "mobilenetv3-3d": _family("mobilenetv3", 3, [16, 12, 12, 20, 40, 56, 96, 160], MBV3_EXPAND, MBV3_SE,
                              MOBILENETV3_ACTS["hardswish"], row_acts=MBV3_ACTS),
    "shufflenetv2-3d-a18": _family("shufflenetv2", 3, WIDTHS_2D, act=SHUFFLENET_ACT),
    "shufflenetv2-3d": _family("shufflenetv2", 3, [16, 16, 32, 40, 80, 112, 192, 320], act=SHUFFLENET_ACT),
    "dsts-3d": _family("dsts", 3, [16, 24, 32, 40, 80, 112, 192, 320], act=DSTS_ACT),
}  # fmt: skip

SHALLOW, DEEP = "focusing resources on the shallower layers", "focusing resources on the deeper layers"
PRESETS: dict[str, LitePreset] = {
    "mobilenetv2-2d-default": LitePreset("mobilenetv2-2d", (1, 2, 2, 3, 3, 4, 1), "A.3", "default (EfficientNet-B0)"),
    "mobilenetv2-2d-bottom": LitePreset("mobilenetv2-2d", (1, 1, 1, 3, 4, 4, 2), "A.4", DEEP),
    "mobilenetv2-2d-top": LitePreset("mobilenetv2-2d", (2, 2, 2, 2, 2, 3, 1), "A.5", SHALLOW),
    "mobilenetv3-2d-default": LitePreset("mobilenetv3-2d", (1, 2, 2, 3, 3, 4, 1), "A.6", "default (MobileNetV3)"),
    "mobilenetv3-2d-bottom": LitePreset("mobilenetv3-2d", (1, 1, 2, 3, 4, 4, 3), "A.7", DEEP),
    "mobilenetv3-2d-top": LitePreset("mobilenetv3-2d", (2, 2, 2, 2, 2, 3, 1), "A.8", SHALLOW),
    "shufflenetv2-2d-default": LitePreset("shufflenetv2-2d", (1, 2, 2, 3, 3, 4, 1), "A.9", "default"),
    "shufflenetv2-2d-bottom": LitePreset("shufflenetv2-2d", (1, 1, 1, 3, 4, 4, 2), "A.10", DEEP),
    "shufflenetv2-2d-top": LitePreset("shufflenetv2-2d", (3, 3, 2, 2, 2, 2, 1), "A.11", SHALLOW),
    "mobilenetv2-3d-default": LitePreset("mobilenetv2-3d", (1, 2, 2, 3, 3, 4, 1), "A.12", "default, 3D"),
    "mobilenetv2-3d-bottom": LitePreset("mobilenetv2-3d", (1, 2, 2, 3, 4, 4, 4), "A.13", DEEP),
    "mobilenetv2-3d-top": LitePreset("mobilenetv2-3d", (2, 2, 2, 2, 2, 3, 1), "A.14", SHALLOW),
    "mobilenetv3-3d-default": LitePreset("mobilenetv3-3d", (1, 2, 3, 3, 3, 4, 2), "A.15", "default, 3D"),
    "mobilenetv3-3d-bottom": LitePreset("mobilenetv3-3d", (1, 2, 3, 3, 4, 4, 5), "A.16", DEEP),
    "mobilenetv3-3d-top": LitePreset("mobilenetv3-3d", (2, 2, 2, 2, 2, 2, 1), "A.17", SHALLOW),
    "shufflenetv2-3d-default": LitePreset("shufflenetv2-3d-a18", (1, 2, 2, 3, 3, 4, 1), "A.18", "default, 3D"),
    "shufflenetv2-3d-top": LitePreset("shufflenetv2-3d", (2, 2, 2, 3, 3, 4, 2), "A.19", DEEP + " (caption swapped)"),
    "shufflenetv2-3d-bottom": LitePreset("shufflenetv2-3d", (1, 2, 4, 4, 4, 5, 5), "A.20", SHALLOW + " (caption swapped)"),
    "dsts-3d-default": LitePreset("dsts-3d", (3, 4, 4, 4, 4, 4, 4), "A.21", "default"),
    "dsts-3d-bottom": LitePreset("dsts-3d", (2, 4, 4, 4, 4, 5, 5), "A.22", DEEP),
    "dsts-3d-top": LitePreset("dsts-3d", (4, 3, 2, 2, 2, 2, 2), "A.23", SHALLOW),
}  # fmt: skip


def preset_rows(name: str) -> list[StageSpec]:
    """The printed table of preset ``name``: one row per layer (block, repeats, kernel, stride, expand, in, out, SE)."""
    preset = _preset(name)
    fam = FAMILIES[preset.family]
    rows = []
    for i, repeats in enumerate(preset.repeats):
        extra = {"act": fam.row_acts[i]} if fam.row_acts else {}
        rows.append(StageSpec(fam.block, repeats, fam.kernels[i], fam.strides[i], fam.expand[i], fam.widths[i],
                              fam.widths[i + 1], fam.se[i], extra))  # fmt: skip
    return rows


def _preset(name: str) -> LitePreset:
    if name not in PRESETS:
        raise KeyError(f"unknown lightweight encoder {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def preset_family(name: str) -> LiteFamily:
    return FAMILIES[_preset(name).family]


def stem_row(name: str, in_channels: int) -> StageSpec:
    """The stem: 3x3 conv (no bias) -> BN -> act, stride 2 in-plane (EfficientNet's stem), width = the first row's input."""
    fam = preset_family(name)
    stride = 2 if fam.spatial_dims == 2 else (1, 2, 2)
    return StageSpec("conv", 1, 3, stride, 1.0, in_channels, fam.widths[0], 0.0, {"bias": False, "act": fam.stem_act})


def feature_stages(rows: Sequence[StageSpec]) -> list[int]:
    """Indices of the last row at each resolution (the skip features): every row followed by a strided row, and the
    last row."""
    strided = [any(s != 1 for s in ensure_tuple(r.stride)) for r in rows]
    return [i for i in range(len(rows) - 1) if strided[i + 1]] + [len(rows) - 1]


def lite_encoder(
    name: str,
    in_channels: int,
    spatial_dims: Optional[int] = None,
    norm: LayerSpec = LITE_NORM,
    act: Optional[LayerSpec] = None,
    **block_kwargs: Any,
) -> TableEncoder:
    """Stem + the rows of preset ``name``; returns one feature map per resolution (the stem's row is not one: the
    first table row keeps its resolution). ``act`` overrides the family's activation (rows with their own keep it);
    ``block_kwargs`` go to every table row's block (e.g. ``fused=False`` for DSTS), not to the stem."""
    fam = preset_family(name)
    if spatial_dims is not None and spatial_dims != fam.spatial_dims:
        raise ValueError(f"{name} is a {fam.spatial_dims}D encoder; got spatial_dims={spatial_dims}")
    table = [replace(row, extra={**block_kwargs, **row.extra}) for row in preset_rows(name)]
    rows = [stem_row(name, in_channels)] + table
    encoder = TableEncoder(fam.spatial_dims, rows, feature_stages(rows), norm, act or fam.act)
    encoder.preset = name
    return encoder


def _register(name: str) -> None:
    def build(spatial_dims: Optional[int] = None, in_channels: int = 1, **kwargs: Any) -> TableEncoder:
        return lite_encoder(name, in_channels, spatial_dims, **kwargs)

    build.__doc__ = f"Tustumi's Table {PRESETS[name].table}: {PRESETS[name].caption}."
    register_encoder(name)(build)


for _name in PRESETS:
    _register(_name)
