"""Training tools of Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on 2D and 3D Deep Neural
Networks" (thesis, 2020), section 3.1.9: RAdam with linear warm-up, Lookahead, SWA.

RAdam, the warm-up (``LinearLR``), ``ReduceLROnPlateau`` and SWA's averaging are PyTorch's own; Lookahead is not in
PyTorch and is implemented in :mod:`monai_effseg.optim.lookahead`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from monai_effseg.optim.lookahead import Lookahead
from monai_effseg.optim.swa import SWAHandler

__all__ = ["Lookahead", "SWAHandler", "radam_lookahead"]


def radam_lookahead(
    params: Iterable[torch.nn.Parameter], lr: float = 1e-3, weight_decay: float = 0.0, k: int = 5, alpha: float = 0.5
) -> Lookahead:
    """``Lookahead(torch.optim.RAdam(params, lr, weight_decay=...), k, alpha)`` (k = 5, alpha = 0.5 as in the
    Lookahead paper; the thesis gives no values)."""
    return Lookahead(torch.optim.RAdam(params, lr=lr, weight_decay=weight_decay), k=k, alpha=alpha)
