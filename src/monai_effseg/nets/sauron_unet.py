"""The nnU-Net that Sauron prunes in its KiTS experiments (Valverde, Shatillo, Tohka,
"Sauron U-Net", Neurocomputing 2024, appendix B/C; authors' ``lib/models/nnUNet.py``).

5 levels, 24 initial filters doubling to 384 (cap 480 never reached), 2 x [conv 3x3x3 (bias) -> InstanceNorm
(affine=False, the PyTorch default the authors' ``ConvBlock`` uses) -> LeakyReLU(0.01)] per level, strided-conv
downsampling, transposed-conv upsampling, and deep-supervision heads on the 3 highest-resolution decoder levels.
Transposed convs and heads have a bias (PyTorch's default ``bias=True``), as the authors build them with default
arguments. Every conv and transposed conv starts from He-normal weights and zero biases (authors'
``lib/models/BaseModel.py``, ``initialize``, with ``lib/utils.py`` ``he_normal``).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai_effseg.blocks.layers import NNUNET_ACT, LayerSpec, he_normal_init
from monai_effseg.nets.plain_unet import PlainUNet
from monai_effseg.nets.registry import register_net

__all__ = ["SAURON_FEATURES", "SAURON_NORM", "SauronUNet", "he_normal_init", "sauron_nnunet"]

SAURON_FEATURES = (24, 48, 96, 192, 384)
SAURON_NORM: tuple = ("instance", {"affine": False})


class SauronUNet(PlainUNet):
    """Sauron's nnU-Net, a :class:`~monai_effseg.nets.PlainUNet` preset, built at full width and ready to be pruned
    (it carries its per-layer widths and resizes itself when it loads a pruned state dict; see
    :mod:`monai_effseg.pruning.widths`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes, background included (KiTS19: 3).
        features: width of each level, highest resolution first.
        kernel_sizes, strides: per level, as in :class:`~monai_effseg.nets.PlainUNet`.
        deep_supervision: return the heads' logits (highest resolution first) while training.
        deep_supervision_levels: how many of the highest-resolution decoder levels have a head (3).
        norm, act: MONAI layer specs of every conv block.

    Weights are initialised by :func:`~monai_effseg.blocks.layers.he_normal_init`, as in the authors' code.
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
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            kernel_sizes=kernel_sizes,
            strides=strides,
            blocks_per_stage=2,
            deep_supervision=deep_supervision,
            deep_supervision_levels=deep_supervision_levels,
            norm=norm,
            act=act,
            bias_convention="v2",  # the authors build transposed convs and heads with PyTorch's default bias=True
            init="he_normal",
        )
        from monai_effseg.pruning.widths import make_prunable  # here, not at the top: monai_effseg.pruning imports nets

        make_prunable(self)


@register_net("sauron_nnunet", profile_input=(1, 160, 160, 80))
def sauron_nnunet(**overrides) -> SauronUNet:
    """Sauron's KiTS19 configuration: 1 CT channel, 3 classes (background, kidney, tumour), widths 24-384."""
    return SauronUNet(**{"spatial_dims": 3, "in_channels": 1, "out_channels": 3, **overrides})
