"""The networks of the zoo, importable into any MONAI workflow."""

from monai_effseg.nets.base import EncoderDecoderNet
from monai_effseg.nets.plain_unet import PlainUNet
from monai_effseg.nets.registry import NETS, build_net, register_net

__all__ = ["NETS", "build_net", "register_net", "EncoderDecoderNet", "PlainUNet"]
from monai_effseg.nets.efficient_unet import EfficientUNet, FullyEffGenericUNet  # noqa: E402  (registers Martinho's Table 1)

__all__ += ["EfficientUNet", "FullyEffGenericUNet"]
from monai_effseg.nets.cascade import UNetCascade  # noqa: E402  (registers "unet_cascade_kits19")
from monai_effseg.nets.mss_unet import MSSUNet  # noqa: E402  (registers "mss_unet")
from monai_effseg.nets.residual_unet import ResidualUNet  # noqa: E402  (registers "residual_unet_kits19")

__all__ += ["ResidualUNet", "UNetCascade", "MSSUNet"]
from monai_effseg.nets.lite_unet import LiteUNet, LiverTumourUNet, combine_liver_mask  # noqa: E402  (registers Tustumi's presets)

__all__ += ["LiteUNet", "LiverTumourUNet", "combine_liver_mask"]
from monai_effseg.nets.sauron_unet import SauronUNet  # noqa: E402  (registers "sauron_nnunet")

__all__ += ["SauronUNet"]
from monai_effseg.nets.staged import StagedNetwork, load_stage_weights, prepare_stage  # noqa: E402

__all__ += ["StagedNetwork", "load_stage_weights", "prepare_stage"]
