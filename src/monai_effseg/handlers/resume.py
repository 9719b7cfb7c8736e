"""Checkpoints that let an interrupted training run continue where it stopped.

Both handlers add the trainer they are attached to into the checkpoint themselves: a bundle config cannot
reference ``@train#trainer`` from inside the trainer's own handler list (a circular reference).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def interval_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The ``*checkpoint_epoch=N.pt`` files MONAI's ``CheckpointSaver(save_interval=...)`` wrote, oldest first."""
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
    looks for one first. Checkpoints are read with ``torch.load(weights_only=True)`` (by ``CheckpointLoader``).
    """

    def __init__(self, ckpt_dir: str | Path, load_dict: dict, map_location=None) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.load_dict = load_dict
        self.map_location = map_location
        self.resumed_from: Path | None = None

    def attach(self, engine) -> None:
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            logger.info("no checkpoint in %s: training from scratch", self.ckpt_dir)
            return
        logger.info("resuming from %s", path)
        self.resumed_from = path
        load_dict = {**self.load_dict, "trainer": engine}
        CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location=self.map_location).attach(engine)


class TrainingCheckpointSaver:
    """MONAI's ``CheckpointSaver`` every ``save_interval`` epochs of ``save_dict`` + the trainer's own state, keeping
    the newest ``n_saved`` files (written atomically by ignite's ``DiskSaver``)."""

    def __init__(self, save_dir: str | Path, save_dict: dict, save_interval: int = 1, n_saved: int = 1) -> None:
        self.save_dir = str(save_dir)
        self.save_dict = save_dict
        self.save_interval = save_interval
        self.n_saved = n_saved

    def attach(self, engine) -> None:
        CheckpointSaver(
            save_dir=self.save_dir,
            save_dict={**self.save_dict, "trainer": engine},
            save_interval=self.save_interval,
            n_saved=self.n_saved,
            epoch_level=True,
        ).attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._remove_stale)

    def _remove_stale(self, engine) -> None:
        # ignite only rotates the files it saved itself; a resumed run would keep the ones from before the crash
        if idist.get_rank() == 0:
            for path in interval_checkpoints(self.save_dir)[: -self.n_saved]:
                path.unlink(missing_ok=True)
