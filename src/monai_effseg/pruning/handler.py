"""End-of-epoch pruning as ignite handlers for MONAI's ``SupervisedTrainer``.

Valverde et al., Sauron (Neurocomputing 2024), algorithm 1 / authors' ``lib/callback.py:338-563``: after every epoch,
each prunable layer drops the channels whose ``delta_prune`` (distance to a reference channel, max-normalised) is
below the layer's threshold ``tau``, and ``tau`` climbs a grid when the training loss plateaus.

Differences from the authors' code (docs/deviations.md lists all of them):

- none in the default ``sampling="last"``: ``delta_prune`` is recomputed on every forward against a new random
  reference channel and the prune uses the last forward before it, as the authors' code does. With ``evaluator`` and
  ``val_interval`` given, the prune of a validation epoch waits for the validation and uses its last patch (their
  ``fit`` validates before the end-of-epoch callback); otherwise it is the last training batch. Once ``tau`` is at its
  maximum a channel still goes on any epoch where that one sample puts it below ``tau``, so pruning goes on.
  ``sampling="epoch_average"`` (opt-in) averages over the epoch's training forwards against one reference per layer
  drawn at the start of the epoch: a steadier criterion, under which compression stalls once ``tau`` stops rising.
- at least ``min_channels`` (2) channels stay in every layer, also when all maps are equal (the authors' code then
  keeps one channel and the regulariser's average becomes NaN).
- the convergence test has no validation-loss condition (see :mod:`monai_effseg.pruning.schedule`).
- optional phases (:meth:`ThresholdSchedule.phase`): ``warmup_epochs`` holds ``tau`` at ``tau_min`` while the
  network learns; ``prune_epochs`` prunes only in the first epochs, then trains the pruned network without the
  regulariser (fine-tune, while the LR decays). The paper prunes until the end of 500 epochs, where the last epochs
  remove little; a short run that prunes until its last epoch ends with a network that never trained at its final
  size.

In a distributed run every rank computes the same decision: references come from a generator seeded by the epoch,
and the loss and distance sums are all-reduced (``"last"``: rank 0's last sample and references are broadcast). A ``DistributedDataParallel`` trainer network is wrapped again after
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

__all__ = ["SAMPLINGS", "SauronPruner", "SauronStatsHandler", "select_channels"]

SAMPLINGS = ("last", "epoch_average")

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
        sampling: ``"last"`` (the authors'): the last forward's ``delta_prune``, a new random reference per forward;
            ``"epoch_average"``: the mean over the epoch's training forwards against one reference per epoch.
        seed: seeds the reference channels (the same on every rank).
        warmup_epochs: ``tau`` stays at ``tau_min`` for epochs ``1..warmup_epochs`` (0, the paper: no warm-up).
        prune_epochs: prune at the end of epochs ``1..prune_epochs`` only; later epochs fine-tune the pruned network
            with the regulariser off (``lam`` 0) and no threshold moves. ``None`` (the paper): prune after every epoch.
        plateau_min_epochs: the plateau test needs this many epochs of history (the authors' 6 validation losses at
            validation every 2 epochs: 12); ``None``: ``patience + 1``.
        evaluator, val_interval: with ``sampling="last"``, the prune of epochs ``k * val_interval`` runs after that
            epoch's validation (``evaluator``'s ``COMPLETED``) on its last forward, as in the authors' code. The
            pruner must be attached before the ``ValidationHandler`` (as in the bundle) and the later handlers
            (stats, checkpoints) see the pruned network. ``None``: the last training batch on every epoch.
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
        sampling: str = "last",
        seed: int = 0,
        warmup_epochs: int = 0,
        prune_epochs: Optional[int] = None,
        plateau_min_epochs: Optional[int] = None,
        evaluator: Optional[Engine] = None,
        val_interval: Optional[int] = None,
        flops_input_shape: Optional[tuple[int, ...]] = None,
        loss_transform: Callable[[Any], Any] = from_engine(["loss"], first=True),
    ) -> None:
        self.regularizer = regularizer
        self.network: nn.Module = regularizer.network
        self.graph = regularizer.graph
        self.optimizer = optimizer
        if optimizer is not None:
            track_optimizer(self.network, optimizer)
        self.schedule = ThresholdSchedule(
            self.graph.layers, tau_min, tau_max, steps, patience, mu, require_plateau,
            min_epochs=plateau_min_epochs, warmup_epochs=warmup_epochs, prune_epochs=prune_epochs,
        )  # fmt: skip
        self.min_channels = min_channels
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling={sampling!r}: expected one of {SAMPLINGS}")
        self.sampling = sampling
        self.seed = seed
        self.prune_epochs = prune_epochs
        if val_interval is not None and val_interval < 1:
            raise ValueError(f"val_interval={val_interval}: at least 1")
        self.evaluator = evaluator
        self.val_interval = val_interval
        self._pending: Optional[tuple[Engine, int]] = None  # (trainer, epoch) whose prune waits for the validation
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
        if self._defers():
            self.evaluator.add_event_handler(Events.COMPLETED, self.validation_completed)

    # events
    def started(self, engine: Engine) -> None:
        self._rewrap(engine)  # a resumed run has loaded a pruned state dict into a DDP-wrapped full-size net
        if not self.history:
            self.history.append(self._snapshot(engine.state.epoch, None))

    def pruning(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` (1-based) prunes (warm-up and pruning phases; not the fine-tune)."""
        return self.schedule.phase(epoch) != "finetune"

    def _defers(self) -> bool:
        return self.sampling == "last" and self.evaluator is not None and self.val_interval is not None

    def epoch_started(self, engine: Engine) -> None:
        if self._pending is not None:  # the validation that was to trigger the last prune never ran
            self._prune(*self._pending)
        self._loss_sum, self._loss_count = 0.0, 0
        if not self.pruning(engine.state.epoch):  # fine-tuning: no statistics, no regulariser
            self.regularizer.lam, self.references = 0.0, {}
            return
        self.regularizer.lam = self.lam
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + engine.state.epoch)
        widths = self.graph.widths(self.network)
        self.references = {n: int(torch.randint(w, (), generator=generator)) for n, w in widths.items()}
        last = self.sampling == "last"
        self.regularizer.start_epoch(self.references, keep_last_only=last, generator=generator if last else None)

    def iteration_completed(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        self._loss_sum += float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        self._loss_count += 1

    def epoch_completed(self, engine: Engine) -> None:
        self.losses.append(self._epoch_loss())
        if not self.pruning(engine.state.epoch):
            self.regularizer.stop()
            self.history.append({**self._snapshot(engine.state.epoch, self.losses[-1]), "phase": "finetune"})
            return
        if self._defers() and engine.state.epoch % self.val_interval == 0:
            self._pending = (engine, engine.state.epoch)  # the validation forwards come next; the last one decides
            self.regularizer.record_validation(True)
            return
        self._prune(engine, engine.state.epoch)

    def validation_completed(self, evaluator: Engine) -> None:
        if self._pending is not None:
            self._prune(*self._pending)

    def _prune(self, engine: Engine, epoch: int) -> None:
        self._pending = None
        self.references = dict(self.regularizer.references)  # "last": the reference of the last forward
        self.regularizer.stop()
        distances = self._epoch_distances()
        raised = self.schedule.step(self.losses, epoch)
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
        entry = self._snapshot(epoch, self.losses[-1])
        entry["phase"] = self.schedule.phase(epoch)
        self.history.append(entry)
        removed = sum(widths[n] - len(k) for n, k in keep.items())
        base = self.history[0]
        logger.info(
            f"Sauron epoch {entry['epoch']}: removed {removed} channels in {len(keep)} layers, tau raised in "
            f"{len(raised)}; {entry['params']:,} params ({100 * entry['params'] / base['params']:.1f}%)"
            + (
                f", {entry['flops'] / 1e9:.2f} GFLOPs ({100 * entry['flops'] / base['flops']:.1f}%)"
                if entry["flops"]
                else ""
            )
        )

    # helpers
    def _epoch_loss(self) -> float:
        total = idist.all_reduce(torch.tensor([self._loss_sum, self._loss_count], dtype=torch.float64))
        return float(total[0] / total[1]) if total[1] > 0 else float("nan")

    def _epoch_distances(self) -> dict[str, torch.Tensor]:
        sums, counts = self.regularizer.sums, self.regularizer.counts
        names = [n for n in self.graph.layers if n in self.references]
        widths = self.graph.widths(self.network)
        last = self.sampling == "last"
        slot = 2 if last else 1  # per layer: distances, count (and the reference channel for "last")
        flat = torch.zeros(sum(widths[n] + slot for n in names), dtype=torch.float64)
        offset = 0
        for n in names:
            if n in sums:
                flat[offset : offset + widths[n]] = sums[n].double().cpu()
                flat[offset + widths[n]] = counts[n]
                if last:
                    flat[offset + widths[n] + 1] = self.references[n]
            offset += widths[n] + slot
        if idist.get_world_size() > 1:  # one decision on every rank: the sum of the ranks, or rank 0's last sample
            flat = idist.broadcast(flat, src=0) if last else idist.all_reduce(flat)
        out, offset = {}, 0
        for n in names:
            count = flat[offset + widths[n]]
            if count > 0:  # layers that saw no forward this epoch are left alone
                out[n] = flat[offset : offset + widths[n]] / count
                if last:
                    self.references[n] = int(flat[offset + widths[n] + 1])
            offset += widths[n] + slot
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

    def __init__(
        self, pruner: SauronPruner, log_dir: str, plot_file: Optional[str] = None, history_file: Optional[str] = None
    ) -> None:
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
            write_history(
                [{**h, "layers": names} if i == 0 else h for i, h in enumerate(self.pruner.history)], self.history_file
            )
        if self.plot_file:
            plot_compression(self.pruner.history, self.plot_file)

    def close(self, engine: Optional[Engine] = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
