"""One training-loss line per epoch instead of MONAI ``StatsHandler``'s line per iteration.

A demo epoch of 30 iterations printed 30 ``Epoch: 1/25, Iter: 2/30 -- train_loss`` lines into the progress bar;
this logs their mean once, when the epoch completes (TensorBoard still gets every iteration).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from ignite.engine import Events

logger = logging.getLogger(__name__)


class EpochLossLogger:
    """Log the mean of ``output_transform(engine.state.output)`` over each epoch's iterations.

    Args:
        tag_name: the name the line gives the value (``train_loss``).
        output_transform: from the engine's output to a number or a 0-d tensor (the loss).
        name: the logger to write to (default this module's; the bundles' ``logging.conf`` prints it).
    """

    def __init__(
        self, tag_name: str = "loss", output_transform: Callable[[Any], Any] = lambda x: x, name: str | None = None
    ) -> None:
        self.tag_name = tag_name
        self.output_transform = output_transform
        self.logger = logging.getLogger(name) if name else logger
        self._sum = 0.0
        self._count = 0

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)

    def _reset(self, engine) -> None:
        self._sum, self._count = 0.0, 0

    def _accumulate(self, engine) -> None:
        value = self.output_transform(engine.state.output)
        value = float(value.item() if hasattr(value, "item") else value)
        if math.isfinite(value):
            self._sum += value
            self._count += 1

    def _log(self, engine) -> None:
        mean = self._sum / self._count if self._count else float("nan")
        self.logger.info(
            "Epoch %d/%d -- %s: %.4f (mean of %d iterations)",
            engine.state.epoch,
            engine.state.max_epochs,
            self.tag_name,
            mean,
            self._count,
        )
