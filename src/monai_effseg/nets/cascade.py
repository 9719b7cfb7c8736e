"""The two-stage 3D U-Net cascade of Hao, "Deep Learning-Based Cascade 3D Kidney Segmentation Method" (MSc thesis,
University of Melbourne, 2024), section 3.1, Figure 3.1, as one module, so that one
checkpoint (``models/model.pt``) holds both stages and a bundle's ``network`` is all that MONAI Label loads.

Stage 1 segments a downsampled ROI of the CT (1 input channel); stage 2 segments a fixed-size box centred on
stage 1's label from the CT and stage 1's segmentation (2 input channels). The cropping, resampling and the two
sliding windows are :class:`monai_effseg.inferers.CascadeInferer`'s job; this module only owns the weights and
routes ``forward`` to the stage being trained or exported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, List, Union

import torch
from torch import nn

from monai_effseg.nets.registry import register_net
from monai_effseg.nets.residual_unet import KITS19_KERNELS, KITS19_STRIDES, ResidualUNet

__all__ = ["UNetCascade", "cascade_stages", "load_stage_weights", "prepare_cascade_stage", "train_cascade_stage"]

logger = logging.getLogger(__name__)


class UNetCascade(nn.Module):
    """Stage-1 and stage-2 networks under one ``state_dict`` (keys ``stage1.*`` and ``stage2.*``).

    ``forward(x)`` runs the network of ``stage`` (1 or 2): the stage a training run optimises, and the one that
    ``verify_net_in_out`` / ``ckpt_export`` see. A TorchScript export keeps both; set ``scripted.stage = 2`` to run
    the second. Whole-CT cascade inference is :class:`monai_effseg.inferers.CascadeInferer`.

    Args:
        stage1: coarse network (1 input channel).
        stage2: fine network (image + stage-1 segmentation: 2 input channels).
        stage: which network ``forward`` runs.
    """

    inference_stages = ("stage1", "stage2")  # called on their own by the cascade inferer (optimize_for_inference)

    def __init__(self, stage1: nn.Module, stage2: nn.Module, stage: int = 1) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.stage1 = stage1
        self.stage2 = stage2
        self.stage = stage

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        if self.stage == 1:
            return self.stage1(x)
        return self.stage2(x)

    def active(self) -> nn.Module:
        """The network of the current stage (e.g. for ``optimizer(params=cascade.active().parameters())``)."""
        return self.stage1 if self.stage == 1 else self.stage2


def cascade_stages(network: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(stage1, stage2)`` of a :class:`UNetCascade`, also inside ``DistributedDataParallel`` / ``DataParallel``."""
    module = getattr(network, "module", network)
    if not (hasattr(module, "stage1") and hasattr(module, "stage2")):
        raise TypeError(f"cascade inference needs a network with .stage1 and .stage2 (UNetCascade), got "
                        f"{type(module).__name__}")  # fmt: skip
    return module.stage1, module.stage2


def load_stage_weights(network: UNetCascade, checkpoint: Union[str, "os.PathLike[str]"], stage: int = 1) -> UNetCascade:
    """Load the ``stage{stage}.*`` weights of a cascade checkpoint (``model.pt`` of a finished stage-1 run).

    Training stage 2 starts from here: stage 1 must be trained and its best weights saved first.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no stage-{stage} checkpoint. Train stage {stage} first (train.json with --stage {stage}); its "
            "best model.pt holds the weights that stage 2 trains on"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)  # a training checkpoint or a bare state dict
    prefix = f"stage{stage}."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise KeyError(f"{path} holds no {prefix}* weights (is it a UNetCascade checkpoint?)")
    getattr(network, f"stage{stage}").load_state_dict(weights)
    logger.info("loaded stage-%d weights from %s", stage, path)
    return network


def prepare_cascade_stage(
    network: UNetCascade, stage: int, stage1_checkpoint: Union[str, "os.PathLike[str]", None] = None
) -> UNetCascade:
    """Set up a cascade for training ``stage``: route ``forward`` to it and freeze the other stage (so DDP and the
    optimizer see only trained parameters). Stage 2 first loads stage 1's best weights from ``stage1_checkpoint``."""
    network.stage = stage
    if stage == 2:
        if stage1_checkpoint is None:
            raise ValueError("training stage 2 needs the checkpoint of a trained stage 1")
        load_stage_weights(network, stage1_checkpoint, stage=1)
    network.requires_grad_(True)
    (network.stage2 if stage == 1 else network.stage1).requires_grad_(False)
    return network


def train_cascade_stage(
    bundle_root: Union[str, "os.PathLike[str]"], stage: int, configs: Sequence[str] = ("train.json",), **overrides: Any
) -> None:
    """Train one stage of a cascade bundle (``train.json`` with ``stage`` set), e.g. stage 2 right after stage 1 in
    a demo's ``run`` list; ``overrides`` are bundle ids (``dataset_dir``, ``ckpt_dir``...)."""
    from monai_effseg.workflows import run_bundle

    # ``overrides`` were resolved by the calling config's parser: pass them as values, never re-parse them as config
    literals = {**overrides, "stage": stage}
    run_bundle(bundle_root, list(configs), "train", literals=literals, run=["$@train#trainer.run()"])


@register_net("unet_cascade_kits19", profile_input=(1, 192, 192, 48))
def unet_cascade_kits19(**overrides) -> UNetCascade:
    """Two of Hao's ResidualUNets for KiTS19 (3 classes, anisotropic plan); profiled as stage 1 at one patch."""
    common = {"out_channels": 3, "kernel_sizes": KITS19_KERNELS, "strides": KITS19_STRIDES, **overrides}
    return UNetCascade(ResidualUNet(in_channels=1, **common), ResidualUNet(in_channels=2, **common))
