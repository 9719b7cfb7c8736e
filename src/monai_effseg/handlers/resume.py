"""Resume an interrupted training run from its newest interval checkpoint."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from monai.handlers import CheckpointLoader

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The ``*checkpoint_epoch=N.pt`` with the largest N that MONAI's ``CheckpointSaver(save_interval=...)`` wrote."""
    found = []
    for path in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt"):
        match = _EPOCH.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class ResumeFromLatest:
    """Attach MONAI's ``CheckpointLoader`` for the newest interval checkpoint, if there is one.

    ``CheckpointLoader`` needs a path that exists when the config is parsed; a fresh run has none, so this looks
    for one first. The checkpoint is read with ``torch.load(weights_only=True)`` (by ``CheckpointLoader``).
    ``load_dict`` should hold the network, optimizer, LR scheduler and the trainer itself, so the run continues at
    the epoch it stopped at.
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
        CheckpointLoader(load_path=str(path), load_dict=self.load_dict, map_location=self.map_location).attach(engine)
