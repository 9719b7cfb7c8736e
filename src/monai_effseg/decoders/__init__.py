"""Registered decoders. Importing this package registers every decoder in :data:`DECODERS`."""

from monai_effseg.decoders.registry import DECODERS, build_decoder, register_decoder
from monai_effseg.decoders.unet import UNetDecoder  # noqa: E402

__all__ = ["DECODERS", "build_decoder", "register_decoder", "UNetDecoder"]
from monai_effseg.decoders.mbconv import fully_efficient_decoder  # noqa: E402  (registers "mbconv")

__all__ += ["fully_efficient_decoder"]
