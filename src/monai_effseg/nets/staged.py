"""One protocol for networks trained stage by stage (:class:`monai_effseg.nets.UNetCascade`, Hao's coarse-then-fine
cascade; :class:`monai_effseg.nets.LiverTumourUNet`, Tustumi's liver-then-tumour nets).

A staged network holds every stage's sub-network under one ``state_dict`` (one ``models/model.pt``). Configs, the
launcher (:func:`monai_effseg.training.train_stage`) and this loader speak one vocabulary: stage *numbers* 1..N.
Each class keeps its paper's names in ``stage_names`` (``("stage1", "stage2")``, ``("liver", "tumour")``): the
attribute that holds each stage's network, the folder a later stage writes to (:func:`stage_dir`) and the name
messages use.

Training stage ``s`` (:func:`prepare_stage`) loads stages ``1..s-1`` from the checkpoint of the finished earlier
runs, routes ``forward`` to stage ``s`` where the class has a per-stage ``forward`` and freezes every other stage (so
DDP and the optimizer only see the trained parameters).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

__all__ = ["StagedNetwork", "load_stage_weights", "prepare_stage", "stage_dir", "stage_index", "staged_module"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


class StagedNetwork:
    """Mixin of an ``nn.Module`` whose stages are sub-networks (attributes named by ``stage_names``).

    Class attributes:
        stage_names: the attribute of each stage's network, in training order (stage 1 first).
        requires_previous_stages: whether training stage ``s > 1`` needs the trained earlier stages (the cascade's
            stage 2 trains on stage 1's predictions) or only starts from them when they exist (the tumour stage
            trains on the ground-truth liver).

    Instance attribute ``stage``: the stage being trained or exported (1..N).
    """

    stage_names: tuple[str, ...] = ()
    requires_previous_stages: bool = True

    def stage_network(self, stage: int) -> nn.Module:
        """The network of stage ``stage`` (1..N)."""
        return getattr(self, self.stage_names[stage_index(stage, len(self.stage_names)) - 1])

    def active(self) -> nn.Module:
        """The network of the current stage (e.g. for ``optimizer(params=network.active().parameters())``)."""
        return self.stage_network(self.stage)


def stage_index(stage: Any, num_stages: int | None = None) -> int:
    """``stage`` (an int or its digits, e.g. from ``--stage 2``) as a stage number in ``1..num_stages`` (any
    positive number where ``num_stages`` is None). Stages are numbers everywhere: a name such as ``"tumour"`` is
    refused, with the numbers to use."""
    try:
        index = int(stage)
    except (TypeError, ValueError):
        index = 0
    valid = 1 <= index and (num_stages is None or index <= num_stages)
    if isinstance(stage, bool) or not valid or str(stage).strip() != str(index):
        upto = "N" if num_stages is None else num_stages
        raise ValueError(f"stage must be a stage number 1..{upto} (e.g. 1 = liver, 2 = tumour), got {stage!r}")
    return index


def staged_module(network: nn.Module) -> StagedNetwork:
    """The :class:`StagedNetwork` of ``network``, also inside ``DistributedDataParallel`` / ``DataParallel``."""
    module = getattr(network, "module", network)
    if not isinstance(module, StagedNetwork):
        raise TypeError(f"expected a staged network (UNetCascade, LiverTumourUNet), got {type(module).__name__}")
    return module


def stage_dir(root: PathLike, stage: int, stage_names: tuple[str, ...] | list[str]) -> str:
    """Where stage ``stage`` writes (checkpoints, logs): ``root`` for stage 1, ``root/<its name>`` after."""
    stage = stage_index(stage, len(stage_names))
    return str(root) if stage == 1 else f"{root}/{stage_names[stage - 1]}"


def load_stage_weights(network: nn.Module, checkpoint: PathLike, stage: int = 1) -> nn.Module:
    """Load the weights of stage ``stage`` (keys ``<stage name>.*``) from ``checkpoint``: the ``model.pt`` of a
    finished run, or a training checkpoint (``{"model": ...}``)."""
    module = staged_module(network)
    stage = stage_index(stage, len(module.stage_names))
    name = module.stage_names[stage - 1]
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no stage-{stage} checkpoint. Train stage {stage} first (train.json with --stage {stage}); its "
            f"best model.pt holds the weights that stage {stage + 1} trains on"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)  # a training checkpoint or a bare state dict
    prefix = f"{name}."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise KeyError(f"{path} holds no {prefix}* weights (is it a {type(module).__name__} checkpoint?)")
    module.stage_network(stage).load_state_dict(weights)
    logger.info("loaded stage-%d (%s) weights from %s", stage, name, path)
    return network


def prepare_stage(network: nn.Module, stage: int, checkpoint: PathLike | None = None) -> nn.Module:
    """Set a staged network up for training stage ``stage`` and return it: stages ``1..stage-1`` load from
    ``checkpoint`` (the best ``model.pt`` of the earlier runs; where the class does not require them, a missing
    checkpoint only warns), ``network.stage = stage``, every other stage frozen."""
    module = staged_module(network)
    stage = stage_index(stage, len(module.stage_names))
    module.stage = stage
    if stage > 1:
        if checkpoint is not None and Path(checkpoint).is_file():
            for earlier in range(1, stage):
                load_stage_weights(module, checkpoint, earlier)
        elif module.requires_previous_stages:
            if checkpoint is None:
                raise ValueError(f"training stage {stage} needs the checkpoint of the trained earlier stages")
            load_stage_weights(module, checkpoint, 1)  # raises FileNotFoundError with the instructions
        else:
            logger.warning("%s does not exist: stage %d (%s) starts untrained (train stage 1 first)", checkpoint,
                           1, module.stage_names[0])  # fmt: skip
    network.requires_grad_(False)
    module.active().requires_grad_(True)
    return network
