"""Thin factories over MONAI's layer factories so every block builds layers the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn
from torch.nn.modules.conv import _ConvNd

LayerSpec = Union[str, tuple]
"""A MONAI layer-factory spec: ``"instance"`` or ``("instance", {"affine": True})``."""

NNUNET_NORM: tuple = ("instance", {"affine": True, "eps": 1e-5})
NNUNET_ACT: tuple = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})


def same_padding(kernel_size: int | Sequence[int]) -> int | tuple[int, ...]:
    """Padding that keeps the size for odd kernels at stride 1 (and halves it exactly at stride 2)."""
    if isinstance(kernel_size, int):
        return kernel_size // 2
    return tuple(k // 2 for k in kernel_size)


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    groups: int = 1,
    bias: bool = True,
) -> nn.Module:
    """A plain ``Conv{2,3}d`` with "same" padding."""
    conv_type = Conv[Conv.CONV, spatial_dims]
    return conv_type(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=same_padding(kernel_size),
        groups=groups,
        bias=bias,
    )


def transposed_conv(
    spatial_dims: int, in_channels: int, out_channels: int, stride: int | Sequence[int], bias: bool = False
) -> nn.Module:
    """Upsampling by a transposed conv whose kernel equals its stride, as in nnU-Net."""
    conv_type = Conv[Conv.CONVTRANS, spatial_dims]
    return conv_type(in_channels, out_channels, stride, stride=stride, bias=bias)


def norm(spec: LayerSpec, spatial_dims: int, channels: int) -> nn.Module:
    return get_norm_layer(spec, spatial_dims=spatial_dims, channels=channels)


def act(spec: LayerSpec) -> nn.Module:
    return get_act_layer(spec)


def per_stage(value, num_stages: int, name: str) -> list:
    """One int for every stage, or a list with one entry (int or per-axis tuple) per stage."""
    if isinstance(value, int):
        return [value] * num_stages
    if len(value) != num_stages:
        raise ValueError(f"{name} needs one entry per stage ({num_stages}), got {list(value)}")
    return [v if isinstance(v, int) else tuple(v) for v in value]


def he_normal_init(module: nn.Module) -> None:
    """He-normal weights (``std = sqrt(2 / fan_in)``, torch's fan-in convention) and zero biases for every conv and
    transposed conv in ``module``, as Sauron's authors initialise their nnU-Net (``lib/utils.py`` ``he_normal``).
    PyTorch's default starts 2.4x smaller, with random biases; docs/deviations.md (Sauron) says why that mattered."""
    for layer in module.modules():
        if isinstance(layer, _ConvNd):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
