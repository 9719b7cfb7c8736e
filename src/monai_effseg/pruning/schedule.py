"""Sauron's per-layer threshold schedule (authors' ``lib/callback.py:338-411``, ``lib/models/Sauron.py:164``).

Every layer starts at ``tau = 0.001`` with patience 0 and moves along ``linspace(0.001, tau_max, steps + 1)``
(``tau_max = 0.3``, ``steps = 15``). At the end of an epoch a layer whose patience is 0 moves one step up when the
training has converged for it, and its patience becomes ``patience`` (5); otherwise a positive patience counts down.

Convergence, as in the authors' ``convergence()`` but without its dead validation test:
(a) at least ``patience + 1`` epochs of history; (b) the last epoch's training loss lies within the range of the
``patience`` epochs before it (a plateau: neither a new minimum nor a new maximum); (d) the layer lost fewer than
``ceil(mu * C)`` channels at the last prune (``mu = 2%``). The authors' (c), ``last_val_loss < min(val_history)``,
compares against a history that already holds the last value, so it can never hold; copying it would tie (a) to the
validation history, which never fills without a validation split.

(a) in the authors' code counts *validation* losses: ``patience + 1 = 6`` of them at their validation every 2 epochs,
so no layer moves before epoch 12. ``min_epochs`` (the bundle: 12) states that in epochs, independent of how often a
run validates; ``None`` keeps ``patience + 1`` epochs.

Phases (options; the paper has neither): ``warmup_epochs`` holds every ``tau`` at ``tau_min`` for the first epochs
(pruning at ``tau_min`` goes on), ``prune_epochs`` ends the raises after that epoch (the pruner then stops pruning and
fine-tunes; :class:`~monai_effseg.pruning.handler.SauronPruner`). :meth:`phase` names the phase of an epoch.

``require_plateau=False`` drops (a) and (b): a layer then moves up every ``patience + 1`` epochs while (d) holds. The
paper's schedule needs hundreds of epochs to climb its 15 steps; a CPU demo of a few dozen epochs uses this to
reach the upper thresholds at all (``kits_sauron_nnunet/configs/demo.json``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Optional

import numpy as np

__all__ = ["ThresholdSchedule"]


class ThresholdSchedule:
    """Per-layer pruning thresholds.

    Args:
        layers: layer names.
        tau_min, tau_max, steps: the grid ``linspace(tau_min, tau_max, steps + 1)``.
        patience: epochs a layer waits after a raise (and the plateau window).
        mu: a layer must have lost fewer than ``ceil(mu * C)`` channels at the last prune to move up.
        require_plateau: raise only on a training-loss plateau (the paper); False: on a fixed cadence.
        min_epochs: (a) needs at least this many epochs of loss history (``None``: ``patience + 1``).
        warmup_epochs: no raise at the end of epochs ``1..warmup_epochs`` (``tau`` stays at ``tau_min``).
        prune_epochs: no raise after epoch ``prune_epochs`` (``None``: raises until the end, the paper).
    """

    def __init__(
        self,
        layers: Iterable[str],
        tau_min: float = 0.001,
        tau_max: float = 0.3,
        steps: int = 15,
        patience: int = 5,
        mu: float = 0.02,
        require_plateau: bool = True,
        min_epochs: Optional[int] = None,
        warmup_epochs: int = 0,
        prune_epochs: Optional[int] = None,
    ) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={warmup_epochs}: at least 0")
        if prune_epochs is not None and prune_epochs < 1:
            raise ValueError(f"prune_epochs={prune_epochs}: at least 1, or None to prune after every epoch")
        if prune_epochs is not None and prune_epochs <= warmup_epochs:
            raise ValueError(
                f"prune_epochs={prune_epochs} <= warmup_epochs={warmup_epochs}: the threshold would never move"
            )
        if require_plateau and patience < 2:
            raise ValueError(
                f"patience={patience}: the plateau test compares the last epoch's loss with the range of the "
                "`patience` epochs before it, which needs at least 2 (with 1 it only holds for an exactly equal "
                "loss); use patience >= 2 or require_plateau=False"
            )
        self.require_plateau = require_plateau
        self.grid = np.linspace(tau_min, tau_max, steps + 1).tolist()
        self.window = patience
        self.min_epochs = max(patience + 1, min_epochs or 0)
        self.warmup_epochs = warmup_epochs
        self.prune_epochs = prune_epochs
        self.mu = mu
        names = list(layers)
        self.index = dict.fromkeys(names, 0)
        self.patience = dict.fromkeys(names, 0)
        self.last_removed = dict.fromkeys(names, 0)
        self.last_width = dict.fromkeys(names, 0)

    def tau(self, layer: str) -> float:
        return self.grid[self.index[layer]]

    def taus(self) -> dict[str, float]:
        return {name: self.tau(name) for name in self.index}

    def phase(self, epoch: int) -> str:
        """``"warmup"``, ``"prune"`` or ``"finetune"``: the phase the end of ``epoch`` (1-based) belongs to."""
        if epoch <= self.warmup_epochs:
            return "warmup"
        if self.prune_epochs is not None and epoch > self.prune_epochs:
            return "finetune"
        return "prune"

    def plateau(self, losses: Sequence[float]) -> bool:
        """(a) and (b): enough history, and the last loss within [min, max] of the ``patience`` before it."""
        if len(losses) < self.min_epochs:
            return False
        previous = losses[-self.window - 1 : -1]
        return min(previous) <= losses[-1] <= max(previous)

    def few_removed(self, layer: str) -> bool:
        """(d): the last prune removed fewer than ``ceil(mu * C)`` of the layer's ``C`` channels."""
        if not self.last_width[layer]:  # never pruned yet
            return True
        return self.last_removed[layer] < math.ceil(self.mu * self.last_width[layer])

    def step(self, losses: Sequence[float], epoch: Optional[int] = None) -> list[str]:
        """End-of-epoch update, before pruning. Returns the layers whose threshold went up. ``epoch`` (1-based;
        ``None``: ``len(losses)``) decides the phase: nothing moves outside ``"prune"``."""
        if self.phase(len(losses) if epoch is None else epoch) != "prune":
            return []
        plateau = self.plateau(losses) if self.require_plateau else True
        raised = []
        for layer in self.index:
            if self.patience[layer] > 0:
                self.patience[layer] -= 1
            elif plateau and self.few_removed(layer):
                if self.index[layer] < len(self.grid) - 1:
                    self.index[layer] += 1
                    raised.append(layer)
                self.patience[layer] = self.window
        return raised

    def record(self, layer: str, width_before: int, width_after: int) -> None:
        self.last_width[layer] = width_before
        self.last_removed[layer] = width_before - width_after

    def state_dict(self) -> dict:
        return {
            "index": dict(self.index),
            "patience": dict(self.patience),
            "last_removed": dict(self.last_removed),
            "last_width": dict(self.last_width),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("index", "patience", "last_removed", "last_width"):
            getattr(self, key).update({k: int(v) for k, v in state[key].items()})
