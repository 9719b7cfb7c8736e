"""Lookahead (Zhang, Lucas, Ba & Hinton, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019), the
wrapper that Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on 2D and 3D Deep Neural Networks"
(thesis, 2020), puts around RAdam (section 3.1.9, Fig. 3.5).

PyTorch has no Lookahead (``torch.optim`` ships RAdam, schedulers and ``swa_utils``, not this wrapper), hence this
minimal version: the wrapped ("fast") optimizer steps as usual; every ``k`` steps the slow weights move
``alpha`` of the way towards the fast ones, and the fast weights restart from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch.optim import Optimizer

__all__ = ["Lookahead"]


class Lookahead(Optimizer):
    """``Lookahead(torch.optim.RAdam(params, lr), k=5, alpha=0.5)``.

    It shares ``param_groups`` with the wrapped optimizer, so LR schedulers (warm-up, ReduceLROnPlateau) built on
    either act on the same learning rates. ``state_dict`` holds the wrapped optimizer's state, the slow weights and
    the step counter, so a resumed run continues the same trajectory.
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"need k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.optimizer = optimizer
        self.k = k
        self.alpha = alpha
        self.steps = 0
        # registers the same group dicts (Optimizer.add_param_group appends the dict it is given)
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.slow = [[p.detach().clone() for p in group["params"]] for group in self.param_groups]

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            for group, slow_params in zip(self.param_groups, self.slow):
                for fast, slow in zip(group["params"], slow_params):
                    slow.add_(fast - slow, alpha=self.alpha)
                    fast.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "slow": self.slow, "steps": self.steps,
                "k": self.k, "alpha": self.alpha}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        for mine, saved in zip(self.slow, state_dict["slow"]):
            for slow, value in zip(mine, saved):
                slow.copy_(value)
        self.steps = int(state_dict["steps"])
