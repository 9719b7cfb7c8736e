"""Training time of a MONAI trainer with its validation runs subtracted, and time caps for training stages.

MONAI's ``ValidationHandler`` runs the evaluator inside the trainer's epoch, so the trainer's own wall time counts
validation too; time-to-Dice figures must not. Ignite's ``Timer`` handler cannot pause on another engine's events,
hence this small helper, shared by the benchmarks that report training seconds. :class:`CappedStages` builds on it:
ignite handlers that stop each stage of a run at its share of a deadline and record every validation.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Optional

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


def iteration_loss(output: Any) -> Optional[float]:
    """The loss of a MONAI trainer iteration's output (a dict, or the decollated list of dicts), else ``None``."""
    output = output[0] if isinstance(output, list) and output else output
    loss = output.get("loss") if isinstance(output, dict) else None
    return float(loss) if loss is not None else None


class CappedStages:
    """Time caps and per-validation records for the training stages of one run (a demo: one trainer per stage).

    :meth:`attach` a stage's trainer and evaluator before its ``trainer.run()``, :meth:`finish` after it. A stage gets
    an equal share of the time left until ``deadline`` among the stages still to come; it stops after the epoch that
    would overrun its share (the next epoch is assumed as long as the last), or mid-epoch past 1.5 x its share + 10 s
    (never in the first epoch: its checkpoint is the fallback). ``stages``: one dict per stage (budget, epochs run,
    why it stopped, training / validation seconds); ``validations``: one dict per validation (training seconds so
    far with validation excluded, the evaluator's metrics, the mean training loss of the epoch).
    """

    def __init__(self, deadline: float, n_stages: int) -> None:
        self.t0 = time.perf_counter()
        self.deadline, self.n_stages = deadline, n_stages
        self.stages: list[dict] = []
        self.validations: list[dict] = []
        self._train_done = 0.0
        self._clock: Optional[TrainingClock] = None

    def attach(self, trainer: Engine, evaluator: Engine) -> dict:
        now = time.perf_counter()
        remaining = max(1, self.n_stages - len(self.stages))
        stage = {"index": len(self.stages), "budget_s": max(0.0, (self.deadline - now) / remaining),
                 "validation_s": 0.0, "epochs": 0, "terminated": None}  # fmt: skip
        self.stages.append(stage)
        clock = self._clock = TrainingClock(trainer, evaluator)
        losses: dict[int, list[float]] = {}
        last_end = [now]

        def started(engine: Engine) -> None:
            stage["max_epochs"], last_end[0] = engine.state.max_epochs, time.perf_counter()

        def epoch_completed(engine: Engine) -> None:  # after the ValidationHandler: the epoch's time includes it
            t = time.perf_counter()
            stage["epochs"], epoch_s, last_end[0] = engine.state.epoch, t - last_end[0], t
            if engine.state.epoch < engine.state.max_epochs and not engine.should_terminate:
                if t - clock.start + epoch_s > stage["budget_s"]:
                    stage["terminated"] = (
                        f"time cap: stopped after epoch {engine.state.epoch} of {engine.state.max_epochs}"
                    )
                    engine.terminate()

        def iteration_completed(engine: Engine) -> None:
            loss = iteration_loss(engine.state.output)
            if loss is not None:
                losses.setdefault(engine.state.epoch, []).append(loss)
            if (
                stage["terminated"] is None
                and stage["epochs"] >= 1
                and (time.perf_counter() - clock.start > 1.5 * stage["budget_s"] + 10)
            ):
                stage["terminated"] = (f"hard time cap: stopped in epoch {engine.state.epoch} "
                                       f"(iteration {engine.state.iteration})")  # fmt: skip
                engine.terminate()

        def validated(engine: Engine, train_s: float) -> None:
            metrics = {}
            for key, value in engine.state.metrics.items():
                with contextlib.suppress(TypeError, ValueError):
                    metrics[key] = float(value)
            epoch_losses = losses.get(int(trainer.state.epoch))
            self.validations.append({
                "stage": stage["index"], "epoch": int(trainer.state.epoch), "stage_train_s": train_s,
                "train_s": self._train_done + train_s, "wall_s": time.perf_counter() - self.t0,
                "validation_s": clock.validation_s - stage["validation_s"], "metrics": metrics,
                "loss": statistics.mean(epoch_losses) if epoch_losses else None,
            })  # fmt: skip
            stage["validation_s"] = clock.validation_s

        trainer.add_event_handler(Events.STARTED, started)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_completed)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration_completed)
        clock.on_validation(validated)
        return stage

    def finish(self) -> dict:
        """Close the stage last attached (its trainer returned or raised)."""
        stage, clock, now = self.stages[-1], self._clock, time.perf_counter()
        start = clock.start if clock is not None and clock.start is not None else now
        stage["validation_s"] = clock.validation_s if clock is not None else 0.0
        stage["end_s"], stage["wall_s"] = now - self.t0, now - start
        stage["train_s"] = stage["wall_s"] - stage["validation_s"]
        self._train_done += stage["train_s"]
        self._clock = None
        return stage
