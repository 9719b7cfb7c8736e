"""Encoder registry. An encoder maps an image to a list of feature maps, highest resolution first, and exposes
``out_channels`` (one entry per feature map) and ``strides`` (each feature map's stride relative to the previous
one; the first is relative to the input)."""

from __future__ import annotations

from monai_effseg.registry import Registry

ENCODERS = Registry("encoder")
register_encoder = ENCODERS.register


def build_encoder(name: str, spatial_dims: int, in_channels: int, **kwargs):
    """Build a registered encoder by name, e.g. ``build_encoder("nnunet", 3, 1, features=[32, 64, 128])``."""
    return ENCODERS.get(name)(spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
