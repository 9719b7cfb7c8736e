"""Stochastic weight averaging (Izmailov et al., UAI 2018) as an ignite handler, built on ``torch.optim.swa_utils``
(Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on 2D and 3D Deep Neural Networks", thesis,
2020, section 3.1.9: "We also apply Stochastic Weight Average (SWA) to the weights with the best loss value").

From ``start_epoch`` on, the handler averages the network's weights after every epoch (``AveragedModel``) and, with
``swa_lr``, switches the learning rate to SWA's annealed constant (``SWALR``). When training completes it recomputes
the BatchNorm statistics of the average (``update_bn``) and writes it to ``save_path``: the state dict of
``save_network`` (e.g. the whole liver/tumour cascade) with the averaged stage in it, ready for inference
(``--ckpt_path models/model_swa.pt``). ``models/model.pt`` stays the best-validation weights.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.optim import Optimizer
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from monai_effseg.data.io import atomic_path

__all__ = ["SWAHandler"]

logger = logging.getLogger(__name__)


class SWAHandler:
    """Average ``network`` from ``start_epoch`` (1-based, inclusive) to the end of training.

    Args:
        network: the module being trained (not a DDP wrapper).
        optimizer: the training optimizer, for ``SWALR`` (only with ``swa_lr``).
        start_epoch: first epoch whose weights enter the average; ``<= 0`` disables the handler.
        save_path: where the averaged weights go when training completes.
        swa_lr: SWA learning rate (``None``: keep the optimizer's schedule).
        anneal_epochs: epochs ``SWALR`` takes to reach ``swa_lr``.
        bn_loader: batches (dicts with ``image_key``) to recompute BatchNorm statistics of the average.
        bn_batches: at most this many batches of ``bn_loader``.
        save_network: the module whose state dict is saved (default ``network``); it must contain ``network``.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: Optional[Optimizer],
        start_epoch: int,
        save_path: str | Path,
        swa_lr: Optional[float] = None,
        anneal_epochs: int = 1,
        bn_loader: Any = None,
        bn_batches: int = 50,
        image_key: str = "image",
        save_network: Optional[nn.Module] = None,
    ) -> None:
        self.network = network
        self.optimizer = optimizer
        self.start_epoch = start_epoch
        self.save_path = Path(save_path)
        self.swa_lr = swa_lr
        self.anneal_epochs = anneal_epochs
        self.bn_loader = bn_loader
        self.bn_batches = bn_batches
        self.image_key = image_key
        self.save_network = save_network if save_network is not None else network
        self.averaged: Optional[AveragedModel] = None
        self.scheduler: Optional[SWALR] = None

    def attach(self, engine: Engine) -> None:
        if self.start_epoch <= 0:
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def epoch_completed(self, engine: Engine) -> None:
        if engine.state.epoch < self.start_epoch:
            return
        if self.averaged is None:
            self.averaged = AveragedModel(self.network)
            if self.swa_lr is not None and self.optimizer is not None:
                self.scheduler = SWALR(self.optimizer, swa_lr=self.swa_lr, anneal_epochs=self.anneal_epochs)
        self.averaged.update_parameters(self.network)
        if self.scheduler is not None:
            self.scheduler.step()

    def completed(self, engine: Engine) -> None:
        if self.averaged is None:
            logger.info("SWA: training ended before epoch %d, nothing averaged", self.start_epoch)
            return
        device = next(self.network.parameters()).device
        if self.bn_loader is not None:
            batches = (b[self.image_key] for b in itertools.islice(self.bn_loader, self.bn_batches))
            update_bn(batches, self.averaged, device=device)
        self.network.load_state_dict(self.averaged.module.state_dict())
        if idist.get_rank() == 0:
            self.save_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.save_path) as tmp:
                torch.save(self.save_network.state_dict(), tmp)
            logger.info("SWA: %d averaged epochs written to %s", int(self.averaged.n_averaged), self.save_path)
