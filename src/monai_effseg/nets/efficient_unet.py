"""EfficientUNet, FullyEfficientUNet and FullyEffGenericUNet (Martinho, "Efficient Algorithms for Medical Image
Segmentation", MSc thesis, section III and Table 1): an EfficientNet(V2) encoder in nnU-Net's U-Net.

- EfficientUNet-*: EfficientNet encoder + nnU-Net decoder (``decoder="nnunet"``).
- FullyEfficientUNet-*: EfficientNet encoder + MBConv decoder (``decoder="mbconv"``).
- FullyEffGenericUNet: nnU-Net encoder + MBConv decoder (``encoder="nnunet"``, ``decoder="mbconv"``). The name is
  the thesis' (Table 1): "Generic" there means nnU-Net's ``Generic_UNet``, i.e. the plain nnU-Net encoder.

The decoder widths are ``min(32 * 2**level, 320)`` (nnU-Net's rule), whatever the encoder's widths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai_effseg.decoders import build_decoder
from monai_effseg.encoders import build_encoder
from monai_effseg.encoders.efficientnet import EFFICIENTNET_COEFFICIENTS, EFFICIENTNETV2
from monai_effseg.nets.base import EncoderDecoderNet
from monai_effseg.nets.registry import register_net


def nnunet_decoder_channels(levels: int, base: int = 32, cap: int = 320) -> list[int]:
    """nnU-Net's widths, highest resolution first: ``min(base * 2**level, cap)``."""
    return [min(base * 2**level, cap) for level in range(levels)]


class EfficientUNet(EncoderDecoderNet):
    """A registered encoder (by name) + a registered decoder (by name), wired as nnU-Net's U-Net.

    Args:
        encoder: ``"efficientnet-b0"``..``"efficientnet-b7"``, ``"efficientnetv2-s"``/``-m``/``-l`` or ``"nnunet"``.
        decoder: ``"nnunet"`` (nnU-Net: 2 x conv3 + IN + LeakyReLU per level) or ``"mbconv"`` (FullyEfficient).
        spatial_dims, in_channels, out_channels: 2 or 3; image channels; classes including background.
        deep_supervision: a head per decoder level; while training the output is their list, highest resolution first.
        decoder_channels: width of each decoder level; default :func:`nnunet_decoder_channels`.
        encoder_kwargs: passed to the encoder builder, e.g. ``{"width_coefficient": 0.5, "drop_connect_rate": 0.1}``.
        decoder_kwargs: passed to the decoder builder, e.g. ``{"kernel_sizes": [3, 3, 3, 3, 3]}``.
    """

    def __init__(
        self,
        encoder: str = "efficientnetv2-s",
        decoder: str = "nnunet",
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 4,
        deep_supervision: bool = True,
        decoder_channels: Sequence[int] | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
        decoder_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        enc = build_encoder(encoder, spatial_dims, in_channels, **dict(encoder_kwargs or {}))
        widths = list(decoder_channels or nnunet_decoder_channels(len(enc.out_channels) - 1))
        dec = build_decoder(
            decoder,
            spatial_dims,
            enc.out_channels,
            enc.strides,
            out_channels,
            decoder_channels=widths,
            deep_supervision=deep_supervision,
            **dict(decoder_kwargs or {}),
        )
        super().__init__(enc, dec)
        self.encoder_name = encoder
        self.decoder_name = decoder


class FullyEffGenericUNet(EfficientUNet):
    """nnU-Net's encoder (6 stages, 32..320) with the FullyEfficient MBConv decoder (Table 1, row 2).

    "Generic" is the thesis' name for nnU-Net's ``Generic_UNet``: the encoder is the plain nnU-Net one (``"nnunet"``),
    only the decoder is "fully efficient"."""

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 4, **kwargs: Any) -> None:
        super().__init__("nnunet", "mbconv", spatial_dims, in_channels, out_channels, **kwargs)


def _register(net_name: str, encoder: str, decoder: str) -> None:
    def build(**overrides: Any) -> EfficientUNet:
        return EfficientUNet(**{"encoder": encoder, "decoder": decoder, **overrides})

    build.__doc__ = f"Martinho's Table 1: {encoder} encoder + {decoder} decoder, 1 CT channel, 4 KiTS21 classes."
    register_net(net_name)(build)


# Table 1 rows: EfficientUNet-b0..b7, FullyEfficientUNet-b0..b7, (Fully)EfficientUNetV2-S/M/L, FullyEffGenericUNet
for _b in EFFICIENTNET_COEFFICIENTS:
    _register(f"efficientunet-{_b}", f"efficientnet-{_b}", "nnunet")
    _register(f"fullyefficientunet-{_b}", f"efficientnet-{_b}", "mbconv")
for _s in EFFICIENTNETV2:
    _register(f"efficientunetv2-{_s}", f"efficientnetv2-{_s}", "nnunet")
    _register(f"fullyefficientunetv2-{_s}", f"efficientnetv2-{_s}", "mbconv")
register_net("fullyeffgenericunet")(FullyEffGenericUNet)
