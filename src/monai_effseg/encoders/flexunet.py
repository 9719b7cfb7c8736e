"""The EfficientNet(V2) encoders of Martinho, "Efficient Algorithms for Medical Image Segmentation" (MSc thesis), as
MONAI ``FlexibleUNet`` backbones.

Importing :mod:`monai_effseg.encoders` (which :mod:`monai_effseg.nets` does) registers them in MONAI's
``FLEXUNET_BACKBONE`` as ``"efficientnet-b0-3d"`` .. ``"efficientnet-b7-3d"`` and ``"efficientnetv2-s-3d"`` /
``-m-3d`` / ``-l-3d`` (MONAI's own ``"efficientnet-b0"`` names are taken by its ImageNet encoders)::

    import monai_effseg.encoders  # noqa: F401  (registers the backbones)
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=1, out_channels=4, backbone="efficientnetv2-s-3d", spatial_dims=3)

``"-3d"`` names the thesis' modified encoder; ``FlexibleUNet(spatial_dims=...)`` still decides 2D or 3D.

How the 6-level thesis layout maps onto FlexibleUNet: FlexibleUNet takes at most 5 features, each 2x smaller than the
previous one, the first at 1/2. The thesis encoder gives 6 (stem at full resolution, then 1/2 .. 1/32), so the
backbone returns the last 5 and drops the full-resolution stem skip; FlexibleUNet's last decoder block upsamples to
full resolution without a skip. The stem still runs (it feeds the first strided stage). For the thesis' own 6-level
U-Net use :class:`monai_effseg.nets.EfficientUNet`.
"""

from __future__ import annotations

from typing import List

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

from monai_effseg.encoders.efficientnet import (
    EFFICIENTNET_ENCODERS,
    EfficientNetEncoder,
    efficientnet_arch,
    efficientnet_stage_table,
    skip_stages,
)


def flexunet_name(encoder_name: str) -> str:
    return f"{encoder_name}-3d"


class EfficientNetFlexEncoder(EfficientNetEncoder, BaseEncoder):
    """An EfficientNet(V2) encoder of Martinho's thesis that returns the 5 features at 1/2 .. 1/32 (the stem skip
    dropped).

    Args:
        arch_name: ``"b0"``..``"b7"`` or ``"v2-s"``/``"v2-m"``/``"v2-l"`` (d-li14 flavour, as the thesis).
        spatial_dims, in_channels: set by FlexibleUNet.
        pretrained: there are no pretrained 3D weights; ``True`` raises.
        kwargs: :class:`~monai_effseg.encoders.efficientnet.EfficientNetEncoder` options (norm, act, drop_connect_rate).
    """

    def __init__(self, arch_name: str, spatial_dims: int = 3, in_channels: int = 1, pretrained: bool = False, **kwargs):
        if pretrained:
            names = [n for n, arch in EFFICIENTNET_ENCODERS.items() if arch == arch_name] or [arch_name]
            raise ValueError(f"no pretrained weights exist for Martinho's encoder {flexunet_name(names[0])!r}")
        super().__init__(efficientnet_arch(arch_name), spatial_dims, in_channels, **kwargs)
        self.out_channels = self.out_channels[1:]
        self.strides = self.strides[1:]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.stage_features(x)[1:]  # not super().forward(x): TorchScript cannot compile super()

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return [flexunet_name(name) for name in EFFICIENTNET_ENCODERS]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        return [
            {"arch_name": arch, "spatial_dims": 3, "in_channels": 1, "pretrained": False}
            for arch in EFFICIENTNET_ENCODERS.values()
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        channels = []
        for arch in EFFICIENTNET_ENCODERS.values():
            rows = efficientnet_stage_table(efficientnet_arch(arch), in_channels=1)
            channels.append(tuple(rows[i].out_channels for i in skip_stages(rows)[1:]))
        return channels

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [5] * len(EFFICIENTNET_ENCODERS)


if flexunet_name("efficientnetv2-s") not in FLEXUNET_BACKBONE.register_dict:
    FLEXUNET_BACKBONE.register_class(EfficientNetFlexEncoder)
