"""The closing summary of a bundle inference run: how many inputs were written, which were skipped and why, which
looked doubtful; and a failed run (non-zero exit) when an input was skipped, unless the user accepted that.

The bundles' ``inference.json`` list :class:`InferenceSummary` among the evaluator's handlers with
``"datalist": "@datalist"`` (an :class:`~monai_effseg.data.io.InferenceDatalist`, which remembers the inputs that
:func:`~monai_effseg.data.inference_datalist` skipped) and ``"skip_bad_inputs": "@skip_bad_inputs"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

from ignite.engine import Engine, Events

from monai_effseg.data.validation import DataValidationError
from monai_effseg.handlers.resume import _drop_evaluator_resume

__all__ = ["InferenceSummary", "SkippedInputsError"]

logger = logging.getLogger(__name__)


class SkippedInputsError(DataValidationError):
    """Inference wrote the valid inputs but skipped others; ``problems`` holds one ``"<file>: <reason>"`` each."""

    def __init__(self, problems: Sequence[str], written: int, output_dir: Any):
        self.written = written
        super().__init__(problems, f"inference input ({written} written to {output_dir}, these skipped)")

    def __str__(self) -> str:
        return (
            super().__str__() + "\nFix or remove the skipped inputs, or pass --skip_bad_inputs true to accept a run "
            "that leaves them out"
        )


class InferenceSummary:
    """Logs ``N written, M skipped (with reasons), K warnings`` when the evaluator completes, and raises
    :class:`SkippedInputsError` if any input was skipped and ``skip_bad_inputs`` is false.

    Args:
        datalist: the run's datalist; its ``skipped`` and ``warnings`` (if it has them) are reported.
        output_dir: where the predictions go (named in the summary).
        skip_bad_inputs: ``True`` accepts skipped inputs (the run then succeeds; the summary still lists them).
        output_key: the key whose metadata ``saved_to`` the saver fills.
    """

    def __init__(
        self, datalist: Optional[Sequence[Any]] = None, output_dir: Any = None, skip_bad_inputs: bool = False,
        output_key: str = "pred",
    ) -> None:  # fmt: skip
        self.skipped: list[str] = list(getattr(datalist, "skipped", []) or [])
        self.warnings: list[str] = list(getattr(datalist, "warnings", []) or [])
        self.output_dir = output_dir
        self.skip_bad_inputs = bool(skip_bad_inputs)
        self.output_key = output_key
        self.written: list[str] = []
        self.processed = 0

    def attach(self, engine: Engine) -> None:
        engine.logger.addFilter(_drop_evaluator_resume)  # an inference run always starts at iteration 0
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self.report)

    def _reset(self, engine: Engine) -> None:
        self.written, self.processed = [], 0

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, (list, tuple)) else [output]:
            if not isinstance(item, dict):
                continue
            self.processed += 1
            meta = getattr(item.get(self.output_key), "meta", None) or {}
            if meta.get("saved_to"):
                self.written.append(str(meta["saved_to"]))

    def summary(self) -> str:
        written = len(self.written) if self.written else self.processed
        lines = [
            f"inference summary: {written} written to {self.output_dir}, {len(self.skipped)} skipped, "
            f"{len(self.warnings)} warning(s)"
        ]
        lines += [f"  skipped: {p}" for p in self.skipped]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def report(self, engine: Engine) -> None:
        text = self.summary()
        (logger.warning if self.skipped or self.warnings else logger.info)(text)
        if self.skipped and not self.skip_bad_inputs:
            raise SkippedInputsError(self.skipped, len(self.written) or self.processed, self.output_dir)
