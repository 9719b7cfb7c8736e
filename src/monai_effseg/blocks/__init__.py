"""The registered block library. Importing this package registers every block in :data:`BLOCKS`."""

from monai_effseg.blocks.registry import BLOCKS, StageSpec, build_block, build_stage, register_block
from monai_effseg.blocks.conv import ConvNormAct  # noqa: E402  (registers "conv")

__all__ = ["BLOCKS", "StageSpec", "build_block", "build_stage", "register_block", "ConvNormAct"]
