"""The registered block library. Importing this package registers every block in :data:`BLOCKS`."""

from monai_effseg.blocks.conv import ConvNormAct  # noqa: E402  (registers "conv")
from monai_effseg.blocks.registry import BLOCKS, StageSpec, build_block, build_stage, register_block

__all__ = ["BLOCKS", "StageSpec", "build_block", "build_stage", "register_block", "ConvNormAct"]
from monai_effseg.blocks.mbconv import FusedMBConv, FusedMBConv1, MBConv  # noqa: E402  (registers "mbconv", "ds", "fused_mbconv", "cn")
from monai_effseg.blocks.se import SqueezeExcitation  # noqa: E402  (registers "squeeze-excitation")

__all__ += ["SqueezeExcitation", "MBConv", "FusedMBConv", "FusedMBConv1"]
from monai_effseg.blocks.residual import BasicResidualBlock  # noqa: E402  (registers "residual")

__all__ += ["BasicResidualBlock"]
from monai_effseg.blocks.dsts import DSTSBlock, DSTSConv  # noqa: E402  (registers "dsts")
from monai_effseg.blocks.mobilenet import MobileNetV3Block, inverted_residual  # noqa: E402  (registers "inverted_residual", "mobilenetv3")
from monai_effseg.blocks.shufflenet import ShuffleDownUnit, ShuffleUnit  # noqa: E402  (registers "shufflenetv2", "shufflenetv2_down")

__all__ += ["MobileNetV3Block", "inverted_residual", "ShuffleUnit", "ShuffleDownUnit", "DSTSBlock", "DSTSConv"]
