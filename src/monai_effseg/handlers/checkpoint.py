"""MONAI's ``CheckpointLoader`` with errors that name the files and the fix.

A ``model.pt`` trained with other network arguments (``features``, ``encoder``, ...) fails in torch with a raw
``size mismatch for ...`` list; a ``model.pt`` without the ``fingerprint.json`` its training wrote next to it was
silently preprocessed with the published spacing and intensities. :class:`CheckedCheckpointLoader` turns the first
into a :class:`CheckpointMismatchError` and logs a warning for the second.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional

from ignite.engine import Engine
from monai.handlers import CheckpointLoader

__all__ = ["CheckedCheckpointLoader", "CheckpointMismatchError"]

logger = logging.getLogger(__name__)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the network the config builds."""


class CheckedCheckpointLoader(CheckpointLoader):
    """``CheckpointLoader`` plus: a missing checkpoint, or one whose tensors do not fit the network, is an error
    naming the file and what to pass; with ``fingerprint_path``, a checkpoint without that fingerprint file is
    warned about (the published fingerprint is then used, which is wrong for a model trained on other data)."""

    def __init__(self, load_path: str, load_dict: dict, fingerprint_path: Optional[str] = None, **kwargs: Any):
        super().__init__(load_path, load_dict, **kwargs)
        self.fingerprint_path = fingerprint_path

    def _check_files(self) -> None:
        ckpt = Path(self.load_path)
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"checkpoint {ckpt} does not exist: train the bundle first (its ckpt_dir gets model.pt) or pass "
                "--ckpt_path to a trained model.pt"
            )
        if self.fingerprint_path is not None and not Path(self.fingerprint_path).is_file():
            logger.warning(
                "%s has no fingerprint %s: preprocessing uses the published spacing and intensities; if the model "
                "was trained on other data, put the fingerprint.json of its training run (written next to its "
                "model.pt) there or pass --fingerprint_path",
                ckpt, self.fingerprint_path,
            )  # fmt: skip

    def __call__(self, engine: Engine) -> None:
        self._check_files()
        try:
            super().__call__(engine)
        except RuntimeError as err:
            text = str(err)
            if "size mismatch" not in text and "Missing key" not in text and "Unexpected key" not in text:
                raise
            details = re.findall(r"size mismatch for [^\n]*", text)[:3] or [text.splitlines()[0][:300]]
            raise CheckpointMismatchError(
                f"checkpoint {self.load_path} does not fit the network this config builds ("
                + "; ".join(d.strip().rstrip(".") for d in details)
                + "): it was trained with other network arguments. Pass the values of its training run "
                "(e.g. --features, --encoder, --num_classes; for a demo checkpoint the demo's "
                "demo_inference_overrides), or the checkpoint that belongs to this configuration"
            ) from None
