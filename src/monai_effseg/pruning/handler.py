"""End-of-epoch pruning as ignite handlers for MONAI's ``SupervisedTrainer``.

Valverde et al., Sauron (Neurocomputing 2024), algorithm 1 / authors' ``lib/callback.py:338-563``: after every epoch,
each prunable layer drops the channels whose ``delta_prune`` (distance to a reference channel, max-normalised) is
below the layer's threshold ``tau``, and ``tau`` climbs a grid when the training loss plateaus.

Differences from the authors' code (docs/deviations.md lists all of them):

- ``delta_prune`` is averaged over the epoch's training forwards against one reference channel per layer drawn at
  the start of the epoch, instead of taken from the last forward pass (often a validation patch in their code). A
  single batch is a noisy basis for a permanent decision; averaging against a *fixed* reference keeps the criterion's
  meaning ("redundant with channel r"). ``epoch_average=False`` restores the last-batch behaviour.
- at least ``min_channels`` (2) channels stay in every layer, also when all maps are equal (the authors' code then
  keeps one channel and the regulariser's average becomes NaN).
- the convergence test has no validation-loss condition (see :mod:`monai_effseg.pruning.schedule`).
- optional ``prune_epochs``: prune only in the first epochs, then train the pruned network without the regulariser.
  The paper prunes until the end of 500 epochs, where the last epochs remove little; a short run that prunes until
  its last epoch ends with a network that never trained at its final size.

In a distributed run every rank computes the same decision: references come from a generator seeded by the epoch,
and the loss and distance sums are all-reduced. A ``DistributedDataParallel`` trainer network is wrapped again after
every surgery (DDP fixes its gradient buckets to the parameters it was built with).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from monai_effseg.pruning.compression import conv_flops, plot_compression, write_history
from monai_effseg.pruning.regularizer import SauronRegularizer
from monai_effseg.pruning.schedule import ThresholdSchedule
from monai_effseg.pruning.surgery import prune_channels, track_optimizer

__all__ = ["SauronPruner", "SauronStatsHandler", "select_channels"]

logger = logging.getLogger(__name__)


def select_channels(distances: torch.Tensor, reference: int, tau: float, min_channels: int = 2) -> torch.Tensor:
    """Indices of the channels to keep: ``distance >= tau`` and the reference; at least ``min_channels``, topped up
    with the farthest channels (NaN distances count as far: nothing is removed on a broken statistic)."""
    d = torch.nan_to_num(distances.double(), nan=float("inf"))
    keep = d >= tau
    keep[reference] = True
    needed = min(min_channels, len(d))
    if int(keep.sum()) < needed:  # the reference plus the farthest others (lowest index first among ties)
        d[reference] = -float("inf")
        keep[torch.sort(d, descending=True, stable=True).indices[: needed - 1]] = True
    return keep.nonzero().flatten()


class SauronPruner:
    """Prune a network at the end of every training epoch.

    Args:
        regularizer: the hooks that collect ``delta_prune`` (and add ``delta_opt`` to the loss).
        optimizer: its parameter list and state follow the surgery.
        tau_min, tau_max, steps, patience, mu, require_plateau: the threshold schedule (paper: 0.001, 0.3, 15, 5,
            0.02, True; see :class:`ThresholdSchedule`).
        min_channels: never fewer channels per layer (2: the reference and its farthest channel).
        epoch_average: average ``delta_prune`` over the epoch (default) or use the last training batch's.
        seed: seeds the per-epoch reference channels (the same on every rank).
        prune_epochs: prune at the end of epochs ``1..prune_epochs`` only; later epochs fine-tune the pruned network
            with the regulariser off (``lam`` 0). ``None`` (the paper): prune after every epoch.
        flops_input_shape: input (batch included) at which the FLOPs of the history are counted; ``None``: not counted.
        loss_transform: the training loss of one iteration from ``engine.state.output``.
    """

    def __init__(
        self,
        regularizer: SauronRegularizer,
        optimizer: Optional[torch.optim.Optimizer] = None,
        tau_min: float = 0.001,
        tau_max: float = 0.3,
        steps: int = 15,
        patience: int = 5,
        mu: float = 0.02,
        require_plateau: bool = True,
        min_channels: int = 2,
        epoch_average: bool = True,
        seed: int = 0,
        prune_epochs: Optional[int] = None,
        flops_input_shape: Optional[tuple[int, ...]] = None,
        loss_transform: Callable[[Any], Any] = from_engine(["loss"], first=True),
    ) -> None:
        self.regularizer = regularizer
        self.network: nn.Module = regularizer.network
        self.graph = regularizer.graph
        self.optimizer = optimizer
        if optimizer is not None:
            track_optimizer(self.network, optimizer)
        self.schedule = ThresholdSchedule(self.graph.layers, tau_min, tau_max, steps, patience, mu, require_plateau)
        self.min_channels = min_channels
        self.epoch_average = epoch_average
        self.seed = seed
        if prune_epochs is not None and prune_epochs < 1:
            raise ValueError(f"prune_epochs={prune_epochs}: at least 1, or None to prune after every epoch")
        self.prune_epochs = prune_epochs
        self.lam = regularizer.lam
        self.flops_input_shape = tuple(flops_input_shape) if flops_input_shape is not None else None
        self.loss_transform = loss_transform
        self.losses: list[float] = []
        self.history: list[dict] = []
        self.references: dict[str, int] = {}
        self._loss_sum, self._loss_count = 0.0, 0
        self._wrapped = self._param_ids()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    # events
    def started(self, engine: Engine) -> None:
        self._rewrap(engine)  # a resumed run has loaded a pruned state dict into a DDP-wrapped full-size net
        if not self.history:
            self.history.append(self._snapshot(engine.state.epoch, None))

    def pruning(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` (1-based) prunes."""
        return self.prune_epochs is None or epoch <= self.prune_epochs

    def epoch_started(self, engine: Engine) -> None:
        self._loss_sum, self._loss_count = 0.0, 0
        if not self.pruning(engine.state.epoch):  # fine-tuning: no statistics, no regulariser
            self.regularizer.lam, self.references = 0.0, {}
            return
        self.regularizer.lam = self.lam
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + engine.state.epoch)
        widths = self.graph.widths(self.network)
        self.references = {n: int(torch.randint(w, (), generator=generator)) for n, w in widths.items()}
        self.regularizer.start_epoch(self.references, keep_last_only=not self.epoch_average)

    def iteration_completed(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        self._loss_sum += float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        self._loss_count += 1

    def epoch_completed(self, engine: Engine) -> None:
        self.regularizer.stop()
        self.losses.append(self._epoch_loss())
        if not self.pruning(engine.state.epoch):
            self.history.append(self._snapshot(engine.state.epoch, self.losses[-1]))
            return
        distances = self._epoch_distances()
        raised = self.schedule.step(self.losses)
        widths = self.graph.widths(self.network)
        keep = {}
        for name, d in distances.items():
            kept = select_channels(d, self.references[name], self.schedule.tau(name), self.min_channels)
            self.schedule.record(name, widths[name], len(kept))
            if len(kept) < widths[name]:
                keep[name] = kept
        if keep:
            prune_channels(self.network, self.graph, keep, [self.optimizer] if self.optimizer is not None else [])
            self._rewrap(engine)
        entry = self._snapshot(engine.state.epoch, self.losses[-1])
        self.history.append(entry)
        removed = sum(widths[n] - len(k) for n, k in keep.items())
        base = self.history[0]
        logger.info(
            f"Sauron epoch {entry['epoch']}: removed {removed} channels in {len(keep)} layers, tau raised in "
            f"{len(raised)}; {entry['params']:,} params ({100 * entry['params'] / base['params']:.1f}%)"
            + (f", {entry['flops'] / 1e9:.2f} GFLOPs ({100 * entry['flops'] / base['flops']:.1f}%)" if entry["flops"] else "")
        )

    # helpers
    def _epoch_loss(self) -> float:
        total = idist.all_reduce(torch.tensor([self._loss_sum, self._loss_count], dtype=torch.float64))
        return float(total[0] / total[1]) if total[1] > 0 else float("nan")

    def _epoch_distances(self) -> dict[str, torch.Tensor]:
        sums, counts = self.regularizer.sums, self.regularizer.counts
        names = [n for n in self.graph.layers if n in self.references]
        widths = self.graph.widths(self.network)
        flat = torch.zeros(sum(widths[n] + 1 for n in names), dtype=torch.float64)
        offset = 0
        for n in names:
            if n in sums:
                flat[offset : offset + widths[n]] = sums[n].double().cpu()
                flat[offset + widths[n]] = counts[n]
            offset += widths[n] + 1
        flat = idist.all_reduce(flat)
        out, offset = {}, 0
        for n in names:
            count = flat[offset + widths[n]]
            if count > 0:  # layers that saw no training forward this epoch are left alone
                out[n] = flat[offset : offset + widths[n]] / count
            offset += widths[n] + 1
        return out

    def _snapshot(self, epoch: int, loss: Optional[float]) -> dict:
        flops = conv_flops(self.network, self.flops_input_shape) if self.flops_input_shape else 0
        return {
            "epoch": int(epoch),
            "loss": loss,
            "params": sum(p.numel() for p in self.network.parameters()),
            "flops": flops,
            "widths": list(self.graph.widths(self.network).values()),
            "taus": list(self.schedule.taus().values()),
        }

    def _param_ids(self) -> list[int]:
        return [id(p) for p in self.network.parameters()]

    def _rewrap(self, engine: Engine) -> None:
        ddp = getattr(engine, "network", None)
        if not isinstance(ddp, DistributedDataParallel) or self._param_ids() == self._wrapped:
            return
        engine.network = DistributedDataParallel(
            ddp.module,
            device_ids=ddp.device_ids,
            output_device=ddp.output_device,
            broadcast_buffers=ddp.broadcast_buffers,
            find_unused_parameters=ddp.find_unused_parameters,
            process_group=ddp.process_group,
        )
        self._wrapped = self._param_ids()

    # checkpointing (ignite / MONAI CheckpointSaver and CheckpointLoader)
    def state_dict(self) -> dict:
        return {"schedule": self.schedule.state_dict(), "losses": list(self.losses), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.losses = [float(v) for v in state["losses"]]
        self.history = list(state["history"])

    def layer_names(self) -> list[str]:
        return list(self.graph.layers)


class SauronStatsHandler:
    """Logs the compression after every epoch: channels per layer, thresholds, total params and FLOPs to TensorBoard,
    the history as JSON and the compression curve as a PNG. Attach after the :class:`SauronPruner` (rank 0 only in
    a distributed run).

    Args:
        pruner: the pruner whose history is logged.
        log_dir: TensorBoard directory.
        plot_file: PNG of params and FLOPs (% of unpruned) against the epoch.
        history_file: JSON list of the per-epoch entries.
    """

    def __init__(self, pruner: SauronPruner, log_dir: str, plot_file: Optional[str] = None, history_file: Optional[str] = None) -> None:
        self.pruner = pruner
        self.log_dir = log_dir
        self.plot_file = plot_file
        self.history_file = history_file
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def __call__(self, engine: Engine) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        entry = self.pruner.history[-1]
        step = entry["epoch"]
        self._writer.add_scalar("sauron/params", entry["params"], step)
        if entry["flops"]:
            self._writer.add_scalar("sauron/flops", entry["flops"], step)
        names = self.pruner.layer_names()
        for name, width, tau in zip(names, entry["widths"], entry["taus"]):
            self._writer.add_scalar(f"sauron/channels/{name}", width, step)
            self._writer.add_scalar(f"sauron/tau/{name}", tau, step)
        self._writer.flush()
        if self.history_file:
            write_history([{**h, "layers": names} if i == 0 else h for i, h in enumerate(self.pruner.history)], self.history_file)
        if self.plot_file:
            plot_compression(self.pruner.history, self.plot_file)

    def close(self, engine: Optional[Engine] = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
