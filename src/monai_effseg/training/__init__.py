"""Training helpers: the one launcher of a later stage of a staged bundle (:class:`monai_effseg.nets.StagedNetwork`:
Hao's cascade, Tustumi's liver-then-tumour nets) from its own run list, the folders of each stage, and the
mixed-precision policy (:mod:`monai_effseg.training.amp`), the multi-GPU process group
(:mod:`monai_effseg.training.distributed`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from monai_effseg.nets.staged import stage_dir, stage_index
from monai_effseg.training.amp import (
    AmpSupervisedTrainer,
    AutocastPredictor,
    amp_dtype,
    amp_kwargs,
    autocast,
    default_amp,
    evaluator_amp,
    grad_scaler,
    to_float,
)
from monai_effseg.training.distributed import init_process_group, release_process_groups

__all__ = ["TRAIN_ONLY", "train_stage", "stage_dir", "lr_step_transform", "AmpSupervisedTrainer", "AutocastPredictor", "amp_dtype",
           "amp_kwargs", "autocast", "default_amp", "evaluator_amp", "grad_scaler", "to_float", "init_process_group",
           "release_process_groups"]  # fmt: skip

TRAIN_ONLY = ["$@train#trainer.run()"]
"""A run list that only trains. Kept here because a bundle config cannot hold this string as data: the parser would
evaluate it where it appears."""


def train_stage(bundle_root: str | Path, configs: Sequence[str], stage: int, **overrides: Any):
    """Train stage ``stage`` (a number, 1..N) of a staged bundle: run ``configs`` (names under
    ``<bundle_root>/configs``) with ``stage`` set and only the trainer, e.g. from the demo's run list after stage 1:
    ``train_stage(@bundle_root, ['train.json', 'demo.json'], 2, ...)``; ``overrides`` are bundle ids
    (``dataset_dir``, ``ckpt_dir``...)."""
    from monai_effseg.workflows import run_bundle

    stage = stage_index(stage)
    # ``overrides`` were resolved by the calling config's parser: pass them as values, never re-parse them as config
    return run_bundle(bundle_root, list(configs), "train", literals={**overrides, "stage": stage}, run=TRAIN_ONLY)


def lr_step_transform(lr_scheduler: LRScheduler | ReduceLROnPlateau, metric: str = "train_loss_epoch") -> Callable:
    """``step_transform`` for MONAI's ``LrScheduleHandler``: the epoch's ``metric`` for ``ReduceLROnPlateau``, no
    argument for every other scheduler. With it a config (a demo overlay, say) can swap the scheduler alone."""
    if isinstance(lr_scheduler, ReduceLROnPlateau):
        return lambda engine: engine.state.metrics[metric]
    return lambda engine: ()
