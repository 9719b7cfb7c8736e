"""The networks of the zoo, importable into any MONAI workflow."""

from monai_effseg.nets.registry import NETS, build_net, register_net
from monai_effseg.nets.base import EncoderDecoderNet
from monai_effseg.nets.plain_unet import PlainUNet

__all__ = ["NETS", "build_net", "register_net", "EncoderDecoderNet", "PlainUNet"]
