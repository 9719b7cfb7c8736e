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

``require_plateau=False`` drops (a) and (b): a layer then moves up every ``patience + 1`` epochs while (d) holds. The
paper's schedule needs hundreds of epochs to climb its 15 steps; a CPU demo of a few dozen epochs uses this to
reach the upper thresholds at all (``kits_sauron_nnunet/configs/demo.json``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

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
    ) -> None:
        if require_plateau and patience < 2:
            raise ValueError(
                f"patience={patience}: the plateau test compares the last epoch's loss with the range of the "
                "`patience` epochs before it, which needs at least 2 (with 1 it only holds for an exactly equal "
                "loss); use patience >= 2 or require_plateau=False"
            )
        self.require_plateau = require_plateau
        self.grid = np.linspace(tau_min, tau_max, steps + 1).tolist()
        self.window = patience
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

    def plateau(self, losses: Sequence[float]) -> bool:
        """(a) and (b): enough history, and the last loss within [min, max] of the ``patience`` before it."""
        if len(losses) < self.window + 1:
            return False
        previous = losses[-self.window - 1 : -1]
        return min(previous) <= losses[-1] <= max(previous)

    def few_removed(self, layer: str) -> bool:
        """(d): the last prune removed fewer than ``ceil(mu * C)`` of the layer's ``C`` channels."""
        if not self.last_width[layer]:  # never pruned yet
            return True
        return self.last_removed[layer] < math.ceil(self.mu * self.last_width[layer])

    def step(self, losses: Sequence[float]) -> list[str]:
        """End-of-epoch update, before pruning. Returns the layers whose threshold went up."""
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
