"""The block registry: table rows become modules, for 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from monai_effseg.blocks import BLOCKS, StageSpec, build_block, build_stage
from monai_effseg.encoders import TableEncoder


def test_registry_lists_known_blocks_in_errors():
    with pytest.raises(KeyError, match="registered: .*conv"):
        build_block("no_such_block", 3, 1, 8)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_conv_block_shapes_and_params(spatial_dims):
    block = build_block("conv", spatial_dims, 4, 8, kernel_size=3, stride=2)
    x = torch.randn(2, 4, *([16] * spatial_dims))
    assert block(x).shape == (2, 8, *([8] * spatial_dims))
    # conv weights + bias + InstanceNorm affine
    assert sum(p.numel() for p in block.parameters()) == 4 * 8 * 3**spatial_dims + 8 + 2 * 8


def test_stage_strides_only_first_block_and_chains_width():
    row = StageSpec("conv", repeats=3, kernel=3, stride=(2, 2, 1), expand=1, in_channels=4, out_channels=8)
    stage = build_stage(row, spatial_dims=3)
    assert len(stage) == 3
    assert stage[0].conv.stride == (2, 2, 1) and stage[1].conv.stride == (1, 1, 1)
    assert stage[0].conv.in_channels == 4 and stage[2].conv.in_channels == 8
    assert stage(torch.randn(1, 4, 16, 16, 8)).shape == (1, 8, 8, 8, 8)


def test_row_cannot_ask_a_block_for_what_it_does_not_do():
    with pytest.raises(ValueError, match="no expansion or SE"):
        build_stage(StageSpec("conv", 1, 3, 1, expand=6, in_channels=4, out_channels=8), spatial_dims=3)


def test_row_extra_overrides_norm_and_act():
    row = StageSpec("conv", 1, 3, 1, 1, 4, 8, extra={"norm": "batch", "act": "relu"})
    block = build_stage(row, spatial_dims=2)[0]
    assert isinstance(block.norm, torch.nn.BatchNorm2d) and isinstance(block.act, torch.nn.ReLU)


def test_table_encoder_checks_chaining_and_reports_strides():
    rows = [StageSpec("conv", 1, 3, 1, 1, 1, 8), StageSpec("conv", 1, 3, (2, 2, 1), 1, 8, 16)]
    encoder = TableEncoder(3, rows)
    assert encoder.out_channels == [8, 16]
    assert encoder.strides == [(1, 1, 1), (2, 2, 1)]
    with pytest.raises(ValueError, match="not chained"):
        TableEncoder(3, [rows[0], StageSpec("conv", 1, 3, 2, 1, 9, 16)])


def test_every_registered_block_builds_in_2d_and_3d():
    for name in BLOCKS.names():
        for dims in (2, 3):
            block = build_block(name, dims, 8, 8)
            assert block(torch.randn(1, 8, *([8] * dims))).shape == (1, 8, *([8] * dims)), name
