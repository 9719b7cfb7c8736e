"""Cubic B-spline resampling along the axes of a volume, one axis at a time, with scipy's answer.

A resampling that only scales and shifts each axis (``output[o] = input[scale * o + offset]`` per axis) is separable
for a tensor-product spline: scipy's ``affine_transform(order=3, mode="nearest")`` pads every axis by replicating
its edge, prefilters along every axis and sums 4 x 4 x 4 = 64 coefficients per output voxel. Done axis by axis (pad,
prefilter and 4 coefficients along that axis only) the result is the same to float32 rounding, at 4 coefficients
per voxel and pass. Each output plane is a weighted sum of 4 whole coefficient planes, which keeps the memory access
contiguous. ``python benchmarks/bench_postprocess_memory.py --bundle kits_residual_unet`` times it on a thin-slice
CT.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

PAD = 12
"""Edge replication before the prefilter, as scipy pads for ``mode="nearest"`` (``_prepad_for_spline_filter``)."""


def cubic_bspline_weights(t: np.ndarray) -> list[np.ndarray]:
    """Weights of the 4 coefficients ``floor(c) - 1 .. floor(c) + 2`` at fractional position ``t = c - floor(c)``."""
    return [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6]


def covered(scale: float, offset: float, size: int, out_size: int) -> bool:
    """Whether every sampled coordinate lies where the padded coefficients answer as scipy would (within the pad)."""
    ends = np.array([offset, offset + scale * (out_size - 1)])
    return bool(np.all(ends >= 2 - PAD) and np.all(ends <= size - 3 + PAD))


def resample_axis(values: np.ndarray, axis: int, scale: float, offset: float, out_size: int) -> np.ndarray:
    """``values`` resampled along ``axis`` with a cubic B-spline (scipy's ``mode="nearest"``), in float32."""
    padded = np.pad(values, [(PAD, PAD) if k == axis else (0, 0) for k in range(values.ndim)], mode="edge")
    coefficients = ndimage.spline_filter1d(padded, 3, axis=axis, output=np.float64, mode="nearest")
    planes = torch.from_numpy(np.moveaxis(coefficients, axis, 0).astype(np.float32))
    del coefficients
    position = offset + scale * np.arange(out_size, dtype=np.float64)
    floor = np.floor(position)
    weights = cubic_bspline_weights(position - floor)
    first = floor.astype(np.int64) - 1 + PAD
    out = torch.empty((out_size, *planes.shape[1:]), dtype=torch.float32)
    for j, plane in enumerate(out):
        torch.mul(planes[first[j]], float(weights[0][j]), out=plane)
        for i in range(1, 4):
            plane.add_(planes[first[j] + i], alpha=float(weights[i][j]))
    return np.moveaxis(out.numpy(), 0, axis)


def cubic_resample(values: np.ndarray, scales: Sequence[float], offsets: Sequence[float],
                   shape: Sequence[int]) -> np.ndarray:  # fmt: skip
    """``scipy.ndimage.affine_transform(values, scales, offsets, output_shape=shape, order=3, mode="nearest")`` for a
    diagonal matrix, axis by axis (shrinking axes first), in float32. Raises ``ValueError`` where a coordinate falls
    outside what the padding covers (callers then use scipy itself)."""
    axes = [a for a in range(values.ndim)
            if shape[a] != values.shape[a] or abs(scales[a] - 1) > 1e-9 or abs(offsets[a]) > 1e-9]  # fmt: skip
    if not all(covered(scales[a], offsets[a], values.shape[a], shape[a]) for a in axes):
        raise ValueError("a coordinate lies beyond the spline padding")
    out = values.astype(np.float32, copy=False)
    for axis in sorted(axes, key=lambda a: shape[a] / values.shape[a]):
        out = resample_axis(out, axis, scales[axis], offsets[axis], shape[axis])
    return out
