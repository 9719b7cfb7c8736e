"""Checkpoints that let an interrupted training run continue where it stopped.

Both handlers add the trainer they are attached to into the checkpoint themselves: a bundle config cannot
reference ``@train#trainer`` from inside the trainer's own handler list (a circular reference).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def interval_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The ``*checkpoint_epoch=N.pt`` files :class:`TrainingCheckpointSaver` wrote, oldest first."""
    found = []
    for path in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt"):
        match = _EPOCH.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = interval_checkpoints(ckpt_dir)
    return found[-1] if found else None


class ResumeFromLatest:
    """Load the newest interval checkpoint, if there is one, into ``load_dict`` + the trainer.

    MONAI's ``CheckpointLoader`` needs a path that exists when the config is parsed; a fresh run has none, so this
    looks for one first. Checkpoints are read with ``torch.load(weights_only=True)`` and restored with ignite's
    ``Checkpoint.load_objects`` at ``STARTED``, as ``CheckpointLoader`` does; a checkpoint that cannot be read (a
    truncated copy) is reported by name and the previous one is used. Given ``evaluator`` (``@validate#evaluator``),
    its best key metric and that metric's epoch are restored too, so the first validation after a restart does not
    count as a new best (see :class:`BestModelSaver`).
    """

    def __init__(self, ckpt_dir: str | Path, load_dict: dict, map_location=None, evaluator=None) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.load_dict = load_dict
        self.map_location = map_location
        self.evaluator = evaluator
        self.resumed_from: Path | None = None

    def attach(self, engine) -> None:
        if self.evaluator is not None:
            # which run the evaluator's best model belongs to (see BestModelSaver)
            self.evaluator.state.checkpoint_run = str(self.ckpt_dir.resolve())
            # every validation is a fresh evaluator run, which ignite also reports as a resume
            self.evaluator.logger.addFilter(_drop_evaluator_resume)
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            logger.info("no checkpoint in %s: training from scratch", self.ckpt_dir)
            # MONAI's engines define their state before ``run``, so ignite reports a fresh start as a resume
            engine.logger.addFilter(_drop_resume_from_zero)
            return
        logger.info("resuming from %s", path)
        self.resumed_from = path
        engine.add_event_handler(Events.STARTED, self._load)  # at STARTED, like MONAI's CheckpointLoader
        engine.add_event_handler(Events.STARTED, self._note_finished)  # after the loader, which also runs at STARTED

    def _read_newest_readable(self) -> tuple[Path, dict]:
        """The newest interval checkpoint that loads, falling back to older ones when the newest is damaged (a
        truncated copy, a full disk); raises, naming every file, when none loads."""
        candidates = interval_checkpoints(self.ckpt_dir)[::-1]
        unreadable: list[str] = []
        for path in candidates:
            try:
                checkpoint = torch.load(path, map_location=self.map_location, weights_only=True)
            except Exception as err:  # a truncated zip, a pickle error, an empty file
                unreadable.append(f"{path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
                continue
            if unreadable:
                logger.warning(
                    "the latest checkpoint %s cannot be read; resuming from the previous one, %s, instead",
                    candidates[0],
                    path,
                )
            return path, checkpoint
        raise RuntimeError(
            f"cannot resume: no checkpoint in {self.ckpt_dir} can be read: {'; '.join(unreadable)}. Move these "
            f"files out of {self.ckpt_dir} (or set another ckpt_dir) to train from scratch."
        )

    def _load(self, engine) -> None:
        path, checkpoint = self._read_newest_readable()
        self.resumed_from = path
        to_load = {**self.load_dict, "trainer": engine}
        best = _EvaluatorBest(self.evaluator) if self.evaluator is not None else None
        if best is not None and _BEST_KEY in checkpoint:
            to_load[_BEST_KEY] = best
        prior_max_epochs = engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=checkpoint)
        except (KeyError, RuntimeError, ValueError) as err:
            raise RuntimeError(
                f"{path} does not fit this training config ({err}). Resume with the config that wrote it, or move "
                f"the checkpoint_epoch=*.pt files out of {self.ckpt_dir} to train from scratch."
            ) from err
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"{path} is from epoch {engine.state.epoch}, beyond max_epochs={prior_max_epochs}: set max_epochs "
                f"to at least {engine.state.epoch} to continue training."
            )
        engine.state.max_epochs = prior_max_epochs
        if best is not None:
            self.evaluator.state.resumed = True
            if _BEST_KEY in checkpoint:
                logger.info(
                    "resumed from %s (epoch %d); best %s so far: %s at epoch %s",
                    path,
                    engine.state.epoch,
                    self.evaluator.state.key_metric_name,
                    self.evaluator.state.best_metric,
                    self.evaluator.state.best_metric_epoch,
                )
            else:
                logger.warning(
                    "%s holds no best validation metric (written by an older version): the next validation "
                    "counts as the best so far",
                    path,
                )
        else:
            logger.info("resumed from %s (epoch %d)", path, engine.state.epoch)

    def _note_finished(self, engine) -> None:
        if engine.state.max_epochs is not None and engine.state.epoch >= engine.state.max_epochs:
            logger.warning(
                "%s is from epoch %d of %d: training is already finished, no epoch runs (delete the "
                "checkpoint_epoch=*.pt files in %s, or set another ckpt_dir, to train again)",
                self.resumed_from,
                engine.state.epoch,
                engine.state.max_epochs,
                self.ckpt_dir,
            )


def _drop_resume_from_zero(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Engine run resuming from iteration 0, epoch 0 ")


def _drop_evaluator_resume(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Engine run resuming from iteration 0, epoch ")


class TrainingCheckpointSaver:
    """``save_dict`` + the trainer's own state (+ the evaluator's best metric and its epoch, given ``evaluator``)
    every ``save_interval`` epochs, as ``checkpoint_epoch=N.pt``, keeping the newest ``n_saved`` files.

    Each file is written atomically (ignite ``DiskSaver(atomic=True)``: a temporary file renamed into place), and the
    older ones are removed only after the new one is complete, so an interruption at any moment leaves a readable
    checkpoint. With ``n_saved >= 2`` :class:`ResumeFromLatest` can fall back to the previous file when the latest is
    damaged after the fact (a truncated copy).
    """

    def __init__(
        self, save_dir: str | Path, save_dict: dict, save_interval: int = 1, n_saved: int = 2, evaluator=None
    ) -> None:
        self.save_dir = str(save_dir)
        self.save_dict = save_dict
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.evaluator = evaluator

    def attach(self, engine) -> None:
        to_save = {**self.save_dict, "trainer": engine}
        if self.evaluator is not None:
            to_save[_BEST_KEY] = _EvaluatorBest(self.evaluator)
        # no rotation by ignite (n_saved=None): it removes the old file before writing the new one
        checkpoint = Checkpoint(
            to_save,
            DiskSaver(self.save_dir, atomic=True, require_empty=False),
            score_function=lambda e: e.state.epoch,
            score_name="epoch",
            n_saved=None,
        )
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), checkpoint)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._remove_stale)

    def _remove_stale(self, engine) -> None:
        # after the new file is complete; also the files of the run before an interruption, which ignite never saw
        if idist.get_rank() == 0:
            for path in interval_checkpoints(self.save_dir)[: -self.n_saved]:
                path.unlink(missing_ok=True)


_BEST_KEY = "best_metric"


class _EvaluatorBest:
    """A MONAI evaluator's best key metric and its epoch (``state.best_metric`` / ``best_metric_epoch``), as an
    object ignite's ``Checkpoint`` can save and load."""

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


def _write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BestModelSaver:
    """Write ``save_dict`` to ``<save_dir>/<filename>`` each time the evaluator it is attached to reaches a new best
    key metric (MONAI's replacement: ``CheckpointSaver(save_key_metric=True, key_metric_filename=...)``).

    "New best" is the evaluator's own bookkeeping (``state.best_metric``, ``best_metric_epoch``), which
    :class:`TrainingCheckpointSaver` stores and :class:`ResumeFromLatest` restores, so a resumed run replaces the file
    only with a better model. The file is written atomically (ignite ``DiskSaver(atomic=True)``), so an interruption
    leaves the previous best intact. ``<filename>.best.json`` records the file's metric and epoch; it is written just
    before the model, so a run interrupted between a new best and its next checkpoint still knows, after the resume,
    what the file on disk scored. A single entry in ``save_dict`` is saved as a bare ``state_dict``, like MONAI's.
    """

    def __init__(self, save_dir: str | Path, save_dict: dict, filename: str = "model.pt") -> None:
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.filename = filename

    @property
    def record_path(self) -> Path:
        return self.save_dir / f"{self.filename}.best.json"

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _record(self) -> dict | None:
        try:
            return json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def __call__(self, engine) -> None:
        state = engine.state
        if state.best_metric_epoch != state.epoch or idist.get_rank() != 0:
            return  # not a new best in this validation
        record, run = self._record(), getattr(state, "checkpoint_run", None)
        if (
            getattr(state, "resumed", False)
            and record is not None
            and record.get("run") == run
            and not engine.metric_cmp_fn(state.best_metric, record["best_metric"])
        ):
            # written after the checkpoint this run resumed from: the file on disk is better
            logger.info(
                "%s (epoch %s, %s %s) kept: better than this validation's %s",
                self.save_dir / self.filename,
                record["best_metric_epoch"],
                state.key_metric_name,
                record["best_metric"],
                state.best_metric,
            )
            state.best_metric, state.best_metric_epoch = record["best_metric"], record["best_metric_epoch"]
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.record_path, {
            "file": self.filename, "key_metric": state.key_metric_name, "best_metric": float(state.best_metric),
            "best_metric_epoch": int(state.best_metric_epoch), "run": run,
        })  # fmt: skip
        checkpoint = {
            key: (obj.module if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else obj)
            .state_dict() for key, obj in self.save_dict.items()
        }  # fmt: skip
        if len(checkpoint) == 1:
            checkpoint = next(iter(checkpoint.values()))
        DiskSaver(str(self.save_dir), atomic=True, require_empty=False)(checkpoint, self.filename)
        logger.info(
            "saved %s: new best %s %s at epoch %d",
            self.save_dir / self.filename,
            state.key_metric_name,
            state.best_metric,
            state.best_metric_epoch,
        )
