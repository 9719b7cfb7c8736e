"""The nnU-Net that Sauron prunes in its KiTS experiments (seed 004, appendix B/C; authors' ``lib/models/nnUNet.py``).

5 levels, 24 initial filters doubling to 384 (cap 480 never reached), 2 x [conv 3x3x3 (bias) -> InstanceNorm
(affine=False, the PyTorch default the authors' ``ConvBlock`` uses) -> LeakyReLU(0.01)] per level, strided-conv
downsampling, transposed-conv upsampling, and deep-supervision heads on the 3 highest-resolution decoder levels.
Transposed convs and heads have a bias (PyTorch's default ``bias=True``), as the authors build them with default
arguments. Every conv and transposed conv starts from He-normal weights and zero biases (authors'
``lib/models/BaseModel.py``, ``initialize``, with ``lib/utils.py`` ``he_normal``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torch.nn.modules.conv import _ConvNd

from monai_effseg.blocks.layers import NNUNET_ACT, LayerSpec
from monai_effseg.decoders import UNetDecoder
from monai_effseg.encoders import generic_encoder
from monai_effseg.encoders.generic import per_stage
from monai_effseg.nets.base import EncoderDecoderNet
from monai_effseg.nets.registry import register_net
from monai_effseg.pruning.widths import make_prunable

__all__ = ["SAURON_FEATURES", "SAURON_NORM", "SauronUNet", "he_normal_init", "sauron_nnunet"]

SAURON_FEATURES = (24, 48, 96, 192, 384)
SAURON_NORM: tuple = ("instance", {"affine": False})


def he_normal_init(module: nn.Module) -> None:
    """He-normal weights (``std = sqrt(2 / fan_in)``) and zero biases for every conv and transposed conv in
    ``module``: the authors' initialisation. PyTorch's default (uniform, ``std = 1 / sqrt(3 fan_in)``, random biases)
    starts 2.4x smaller; with it and seed 0 the demo's 8-channel full-resolution head settled on predicting kidney as
    tumour and never left that state (measured 2026-12-02, ``kits_sauron_nnunet/docs/README.md``)."""
    for layer in module.modules():
        if isinstance(layer, _ConvNd):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class SauronUNet(EncoderDecoderNet):
    """Sauron's nnU-Net, built at full width and ready to be pruned (it carries its per-layer widths and resizes
    itself when it loads a pruned state dict; see :mod:`monai_effseg.pruning.widths`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes, background included (KiTS19: 3).
        features: width of each level, highest resolution first.
        kernel_sizes, strides: per level, as in :class:`~monai_effseg.nets.PlainUNet`.
        deep_supervision: return the heads' logits (highest resolution first) while training.
        deep_supervision_levels: how many of the highest-resolution decoder levels have a head (3).
        norm, act: MONAI layer specs of every conv block.

    Weights are initialised by :func:`he_normal_init`, as in the authors' code.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 3,
        features: Sequence[int] = SAURON_FEATURES,
        kernel_sizes=3,
        strides=None,
        deep_supervision: bool = True,
        deep_supervision_levels: int = 3,
        norm: LayerSpec = SAURON_NORM,
        act: LayerSpec = NNUNET_ACT,
    ) -> None:
        encoder = generic_encoder(spatial_dims, in_channels, features, kernel_sizes, strides, 2, "conv", norm, act)
        decoder = UNetDecoder(
            spatial_dims,
            encoder.out_channels,
            encoder.strides,
            out_channels,
            kernel_sizes=per_stage(kernel_sizes, len(features), "kernel_sizes")[:-1],
            deep_supervision=deep_supervision,
            deep_supervision_levels=deep_supervision_levels,
            norm=norm,
            act=act,
            transpose_bias=True,
            head_bias=True,
        )
        super().__init__(encoder, decoder)
        he_normal_init(self)
        make_prunable(self)


@register_net("sauron_nnunet", profile_input=(1, 160, 160, 80))
def sauron_nnunet(**overrides) -> SauronUNet:
    """Sauron's KiTS19 configuration: 1 CT channel, 3 classes (background, kidney, tumour), widths 24-384."""
    return SauronUNet(**{"spatial_dims": 3, "in_channels": 1, "out_channels": 3, **overrides})
