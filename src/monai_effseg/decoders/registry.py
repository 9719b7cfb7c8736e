"""Decoder registry. A decoder takes an encoder's ``out_channels`` and ``strides`` and turns its feature list into
segmentation logits (a list, highest resolution first, when deep supervision is on and the module is training)."""

from __future__ import annotations

from monai_effseg.registry import Registry

DECODERS = Registry("decoder")
register_decoder = DECODERS.register


def build_decoder(name: str, spatial_dims: int, encoder_channels, encoder_strides, out_channels: int, **kwargs):
    return DECODERS.get(name)(
        spatial_dims=spatial_dims,
        encoder_channels=encoder_channels,
        encoder_strides=encoder_strides,
        out_channels=out_channels,
        **kwargs,
    )
