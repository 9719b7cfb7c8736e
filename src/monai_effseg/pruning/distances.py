"""Sauron's two channel distances (Valverde, Shatillo, Tohka, Neurocomputing 594:127817, 2024).

- :func:`delta_opt`, the regulariser: min-max normalised maps, average-pooled, RMS distance of every channel to
  channel 0 (authors' ``lib/distance.py:4-21``, ``Euclidean_norm``); opt-in, z-scored maps instead.
- :func:`delta_prune`, the pruning criterion: average-pooled raw maps, RMS distance to a reference channel over all
  spatial axes, divided by the per-sample maximum (``lib/distance.py:23-40``, ``Euclidean_rand``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["avg_pool", "check_normalisation", "delta_opt", "delta_prune"]

_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def avg_pool(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """``AvgPool(kernel = stride = factor)`` over every spatial axis; an axis shorter than ``factor`` is pooled by
    its own length (the authors' layer would fail there; it only happens on tiny test patches)."""
    if factor <= 1:
        return x
    kernel = [min(factor, s) for s in x.shape[2:]]
    return _POOLS[x.dim() - 2](x, kernel_size=kernel, stride=kernel)


def _rms(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    # clamp keeps the gradient finite where two maps coincide (d/dx sqrt(x) is infinite at 0)
    return (a - b).pow(2).mean(dim=dims).clamp_min(eps * eps).sqrt()


def check_normalisation(normalisation: str, per_slice: bool = False) -> None:
    """Raise if :func:`delta_opt` cannot take this ``normalisation`` (with ``per_slice``)."""
    if normalisation not in ("minmax", "zscore"):
        raise ValueError(f"normalisation={normalisation!r}: expected 'minmax' or 'zscore'")
    if normalisation == "zscore" and per_slice:
        raise ValueError("per_slice reproduces the authors' per-slice min-max; it has no z-score form")


def delta_opt(
    x: torch.Tensor,
    pool: int = 2,
    per_slice: bool = False,
    eps: float = 1e-8,
    normalisation: str = "minmax",
    slice_axis: int = -1,
) -> torch.Tensor:
    """Distances of channels ``1..C-1`` to channel 0 of the normalised, pooled maps ``x`` (B, C, *spatial).

    Args:
        x: feature maps (gradients flow through them).
        pool: average-pooling factor (``sf = 2`` in the authors' KiTS config).
        per_slice: reproduce the authors' 3D behaviour: min/max and the RMS over every spatial axis but
            ``slice_axis`` (per 2D slice along that axis, a quirk of their 2D code). ``False`` normalises each whole map.
        slice_axis: the spatial axis (0-based among the spatial axes; negative counts from the end) the slices are
            cut along with ``per_slice``. The authors' code cuts along the last array axis of their (z, y, x) KiTS
            arrays, i.e. x (sagittal slices); in MONAI's RAS (x, y, z) layout that is spatial axis 0. Default -1:
            the last axis, literally what their code does on whatever layout it gets.
        eps: added to ``max - min`` (the authors divide by it bare, which gives NaN on a constant map).
        normalisation: ``"minmax"`` (the authors'), or ``"zscore"``, an opt-in deviation: each pooled map minus its
            mean over its standard deviation, so the distance is ``sqrt(2 (1 - correlation))``. A few extreme voxels
            widen a map's min-max range and so shrink the min-max distance without making the maps alike; they move
            the correlation far less. ``per_slice`` is a min-max quirk and cannot be combined with it.

    Returns:
        ``(B, C-1)``, or ``(B, C-1, S')`` with ``per_slice`` and 3D input (``S'``: the pooled slice axis, last).
        Empty when ``C < 2``.
    """
    check_normalisation(normalisation, per_slice)
    x = x.float()
    if per_slice and x.dim() > 4:
        x = x.movedim(2 + slice_axis % (x.dim() - 2), -1)  # the slice axis last; pooling is per axis, so it commutes
    spatial = tuple(range(2, x.dim()))
    if normalisation == "zscore":
        pooled = avg_pool(x, pool)
        centred = pooled - pooled.mean(dim=spatial, keepdim=True)
        pooled = centred / centred.pow(2).mean(dim=spatial, keepdim=True).clamp_min(eps * eps).sqrt()
        return _rms(pooled[:, :1], pooled[:, 1:], spatial, eps)
    if per_slice and x.dim() > 4:
        axes = spatial[:-1]
        low, high = x.amin(dim=axes, keepdim=True), x.amax(dim=axes, keepdim=True)
        pooled = avg_pool((x - low) / (high - low + eps), pool)
    else:
        axes = spatial
        low, high = x.amin(dim=axes, keepdim=True), x.amax(dim=axes, keepdim=True)
        # pooling is linear and the normalisation affine per map, so they commute; pooling first saves memory
        pooled = (avg_pool(x, pool) - low) / (high - low + eps)
    return _rms(pooled[:, :1], pooled[:, 1:], axes, eps)


@torch.no_grad()
def delta_prune(x: torch.Tensor, reference: int, pool: int = 2, eps: float = 1e-15) -> torch.Tensor:
    """Per-sample distances ``(B, C)`` of every channel to channel ``reference``, divided by their maximum.

    The reference channel has distance 0 and the farthest channel 1. A layer whose maps are all equal has all
    distances 0 (the caller must not let that empty the layer).
    """
    pooled = avg_pool(x.detach().float(), pool)
    spatial = tuple(range(2, pooled.dim()))
    d = (pooled - pooled[:, reference : reference + 1]).pow(2).mean(dim=spatial).sqrt()
    return d / (d.amax(dim=1, keepdim=True) + eps)
