"""Training time of a MONAI trainer with its validation runs subtracted.

MONAI's ``ValidationHandler`` runs the evaluator inside the trainer's epoch, so the trainer's own wall time counts
validation too; time-to-Dice figures must not. Ignite's ``Timer`` handler cannot pause on another engine's events,
hence this small helper, shared by the benchmarks that report training seconds.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from ignite.engine import Engine, Events


class TrainingClock:
    """Attach to a trainer and its evaluator; ``on_validation`` callbacks get ``(evaluator, training_seconds)`` after
    every validation, with all validation time so far excluded from ``training_seconds``."""

    def __init__(self, trainer: Engine, evaluator: Engine) -> None:
        self.start: Optional[float] = None
        self.validation_s = 0.0
        self._val_start = 0.0
        self._callbacks: list[Callable[[Engine, float], None]] = []
        trainer.add_event_handler(Events.STARTED, self._started)
        evaluator.add_event_handler(Events.STARTED, self._val_started)
        evaluator.add_event_handler(Events.COMPLETED, self._val_completed)

    def on_validation(self, callback: Callable[[Engine, float], None]) -> Callable[[Engine, float], None]:
        """Register ``callback``; usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def training_seconds(self, now: Optional[float] = None) -> float:
        if self.start is None:
            return 0.0
        return (time.perf_counter() if now is None else now) - self.start - self.validation_s

    def _started(self, _: Engine) -> None:
        self.start = time.perf_counter()

    def _val_started(self, _: Engine) -> None:
        self._val_start = time.perf_counter()

    def _val_completed(self, evaluator: Engine) -> None:
        now = time.perf_counter()
        self.validation_s += now - self._val_start
        for callback in self._callbacks:
            callback(evaluator, self.training_seconds(now))
