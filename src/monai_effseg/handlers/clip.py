"""Gradient-norm clipping for MONAI's trainers, as nnU-Net's training step does it.

nnU-Net (v1 and v2) clips the global gradient norm to 12 between the backward pass and the optimizer step; with a
``GradScaler`` it unscales the gradients first, so the threshold is on the true gradients. MONAI's
``SupervisedTrainer`` has no clipping option and ignite has no clipping handler, but the trainer fires
``IterationEvents.BACKWARD_COMPLETED`` exactly there, which is where this handler runs.
"""

from __future__ import annotations

import torch
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipping"]


class GradientClipping:
    """Clip the total L2 norm of the network's gradients to ``max_norm`` before every optimizer step.

    Args:
        max_norm: the largest gradient norm (nnU-Net: 12).

    The norm before clipping is kept in ``engine.state.grad_norm``. Under gradient accumulation only the iterations
    that step the optimizer clip (the accumulated gradient, as a single large batch would). Attach to a
    ``SupervisedTrainer``; the bundles' trainer (:class:`monai_effseg.training.AmpSupervisedTrainer`) attaches it
    itself from ``grad_clip_norm`` in ``train.json``.
    """

    def __init__(self, max_norm: float) -> None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
            raise ValueError(
                f"gradient clipping: the largest gradient norm must be a positive number, got {max_norm!r}; "
                "give grad_clip_norm a number (nnU-Net: 12), or null in the config (None on the command line) "
                "for no clipping"
            )
        self.max_norm = float(max_norm)

    def attach(self, engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine) -> None:
        if not _steps_this_iteration(engine):
            return
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)  # the scaler's step() then knows the gradients are unscaled
        norm = torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)
        engine.state.grad_norm = float(norm)


def _steps_this_iteration(engine) -> bool:
    """Whether MONAI's trainer calls the optimizer's step after this backward pass (its accumulation rule)."""
    acc = int(getattr(engine, "accumulation_steps", 1) or 1)
    if acc == 1:
        return True
    epoch_length = engine.state.epoch_length
    if epoch_length is not None:
        local = (engine.state.iteration - 1) % epoch_length
        return (local + 1) % acc == 0 or local + 1 == epoch_length
    return engine.state.iteration % acc == 0
