"""The two-stage 3D U-Net cascade of Hao, "Deep Learning-Based Cascade 3D Kidney Segmentation Method" (MSc thesis,
University of Melbourne, 2024), section 3.1, Figure 3.1, as one module, so that one
checkpoint (``models/model.pt``) holds both stages and a bundle's ``network`` is all that MONAI Label loads.

Stage 1 segments a downsampled ROI of the CT (1 input channel); stage 2 segments a fixed-size box centred on
stage 1's label from the CT and stage 1's segmentation (2 input channels). The cropping, resampling and the two
sliding windows are :class:`monai_effseg.inferers.CascadeInferer`'s job; this module only owns the weights and
routes ``forward`` to the stage being trained or exported.
"""

from __future__ import annotations

from typing import List, Union

import torch
from torch import nn

from monai_effseg.nets.registry import register_net
from monai_effseg.nets.residual_unet import KITS19_KERNELS, KITS19_STRIDES, ResidualUNet
from monai_effseg.nets.staged import StagedNetwork, stage_index

__all__ = ["UNetCascade", "cascade_stages"]


class UNetCascade(StagedNetwork, nn.Module):
    """Stage-1 and stage-2 networks under one ``state_dict`` (keys ``stage1.*`` and ``stage2.*``), a
    :class:`monai_effseg.nets.staged.StagedNetwork`.

    ``forward(x)`` runs the network of ``stage`` (1 or 2): the stage a training run optimises, and the one that
    ``verify_net_in_out`` / ``ckpt_export`` see. A TorchScript export keeps both; set ``scripted.stage = 2`` to run
    the second. Whole-CT cascade inference is :class:`monai_effseg.inferers.CascadeInferer`.

    Args:
        stage1: coarse network (1 input channel).
        stage2: fine network (image + stage-1 segmentation: 2 input channels).
        stage: which network ``forward`` runs.
    """

    stage_names = ("stage1", "stage2")
    requires_previous_stages = True  # stage 2 trains on stage 1's predictions
    inference_stages = stage_names  # called on their own by the cascade inferer (optimize_for_inference)

    def __init__(self, stage1: nn.Module, stage2: nn.Module, stage: int = 1) -> None:
        super().__init__()
        self.stage1 = stage1
        self.stage2 = stage2
        self.stage = stage_index(stage, 2)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        if self.stage == 1:
            return self.stage1(x)
        return self.stage2(x)


def cascade_stages(network: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(stage1, stage2)`` of a :class:`UNetCascade`, also inside ``DistributedDataParallel`` / ``DataParallel``."""
    module = getattr(network, "module", network)
    if not (hasattr(module, "stage1") and hasattr(module, "stage2")):
        raise TypeError(f"cascade inference needs a network with .stage1 and .stage2 (UNetCascade), got "
                        f"{type(module).__name__}")  # fmt: skip
    return module.stage1, module.stage2


@register_net("unet_cascade_kits19", profile_input=(1, 192, 192, 48))
def unet_cascade_kits19(**overrides) -> UNetCascade:
    """Two of Hao's ResidualUNets for KiTS19 (3 classes, anisotropic plan); profiled as stage 1 at one patch."""
    common = {"out_channels": 3, "kernel_sizes": KITS19_KERNELS, "strides": KITS19_STRIDES, **overrides}
    return UNetCascade(ResidualUNet(in_channels=1, **common), ResidualUNet(in_channels=2, **common))
