"""Set-up that needs the trainer or the training data, done when the trainer is built instead of at ``initialize``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RunSetup:
    """A ``train#handlers`` entry for the set-up steps of a training run that need the trainer or the data.

    ``ConfigWorkflow.initialize`` (what ``monai.bundle.load(..., workflow_type="train")`` calls to build the network)
    evaluates a bundle's ``initialize`` list, where no dataset need exist. Steps such as
    ``"$@validate#early_stop.set_trainer(@train#trainer)"`` or ``"$@fingerprint"`` there build the trainer, the dataset
    or the dataset fingerprint. Listed here instead, they happen when the trainer is built, that is when the workflow
    runs, whatever its ``run`` list::

        {"_target_": "monai_effseg.handlers.RunSetup", "set_trainer": ["@validate#early_stop"],
         "requires": ["@fingerprint"]}

    Args:
        set_trainer: handlers of the evaluator that need the trainer (``EarlyStopHandler``): ``set_trainer`` is called
            with the engine that attaches this handler.
        requires: values the run must compute before it starts (e.g. ``"@fingerprint"``, which writes
            ``fingerprint.json``). The config resolves them when it builds this handler, with the trainer; they are
            only kept here.
    """

    def __init__(self, set_trainer: Sequence[Any] = (), requires: Sequence[Any] = ()) -> None:
        for handler in set_trainer:
            if not callable(getattr(handler, "set_trainer", None)):
                raise TypeError(f"{type(handler).__name__} has no set_trainer(trainer)")
        self.set_trainer = list(set_trainer)
        self.requires = list(requires)

    def attach(self, engine) -> None:
        for handler in self.set_trainer:
            handler.set_trainer(engine)
