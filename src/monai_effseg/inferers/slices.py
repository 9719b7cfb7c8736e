"""Whole-volume inference with slab networks: 2.5D (9 slices in as channels, the middle slice out) and 3D (8 slices
in, the middle 4 out): Tustumi, "Automatic Liver Tumor Segmentation from CT Images Based on 2D and 3D Deep Neural
Networks" (thesis, 2020), sections 3.1.2 and 3.1.5.

The volume is ``(B, C, X, Y, Z)`` with the slices on ``slice_axis`` (MONAI's RAS arrays: the last axis). Every output
slice is predicted exactly once: windows of ``in_slices`` step by ``out_slices``, and the slices beyond the volume's
ends are zeros ("The edge cases are dealt with zero padding", section 3.1.2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer

from monai_effseg.encoders.lite import SLABS
from monai_effseg.training.amp import autocast, to_float

__all__ = ["SliceStackInferer"]


class SliceStackInferer(Inferer):
    """Run a slab network over every slice of a volume.

    Args:
        spatial_dims: the network's: 2 (slices as channels, ``(N, C * in_slices, X, Y)`` in, ``(N, K, X, Y)`` out) or
            3 (``(N, C, in_slices, X, Y)`` in, ``(N, K, out_slices, X, Y)`` out).
        in_slices, out_slices: default 9 / 1 (2D) and 8 / 4 (3D), the thesis' slabs.
        batch_size: slabs per network call.
        slice_axis: spatial axis of the slices in the volume (default the last, z in RAS).
        channels_last: pass slabs as channels-last tensors (oneDNN's fast layout on the CPU, e.g. for the fused DSTS
            branches); the output is contiguous either way.
        amp: run the network under :func:`monai_effseg.training.autocast` for the input's device (bf16 on the CPU and
            recent GPUs, fp16 on older ones); the outputs are float32.
        amp_dtype: the autocast dtype instead of :func:`monai_effseg.training.amp_dtype`'s.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_slices: int | None = None,
        out_slices: int | None = None,
        batch_size: int = 8,
        slice_axis: int = -1,
        channels_last: bool = False,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.in_slices = in_slices or SLABS[spatial_dims].in_slices
        self.out_slices = out_slices or SLABS[spatial_dims].out_slices
        if (self.in_slices - self.out_slices) % 2:
            raise ValueError(f"in_slices - out_slices must be even (centred output), got {in_slices}, {out_slices}")
        if spatial_dims == 2 and self.out_slices != 1:
            raise ValueError("a 2.5D network predicts one slice")
        self.batch_size = batch_size
        self.slice_axis = slice_axis
        self.channels_last = channels_last
        self.amp = bool(amp)
        self.amp_dtype = amp_dtype

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs (B, C, *spatial)`` -> ``(B, K, *spatial)`` logits (whatever the network returns, reassembled)."""
        axis = self.slice_axis % (inputs.dim() - 2) + 2
        volume = inputs.movedim(axis, 2).as_subclass(torch.Tensor)  # (B, C, Z, X, Y)
        b, c, depth = volume.shape[:3]
        context = (self.in_slices - self.out_slices) // 2
        windows = -(-depth // self.out_slices)
        tail = windows * self.out_slices - depth + context
        padded = F.pad(volume, [0, 0, 0, 0, context, tail])
        outputs: list[torch.Tensor] = []
        for first in range(0, windows, self.batch_size):
            starts = range(first * self.out_slices, min(windows, first + self.batch_size) * self.out_slices,
                           self.out_slices)  # fmt: skip
            slabs = torch.cat([padded[:, :, s : s + self.in_slices] for s in starts])  # (n * B, C, in, X, Y)
            if self.spatial_dims == 2:
                slabs = slabs.flatten(1, 2)
            if self.channels_last:
                fmt = torch.channels_last if slabs.dim() == 4 else torch.channels_last_3d
                slabs = slabs.contiguous(memory_format=fmt)
            with autocast(slabs.device, self.amp, self.amp_dtype):
                pred = network(slabs, *args, **kwargs)
            pred = (to_float(pred) if self.amp else pred).contiguous()
            if self.spatial_dims == 2:
                pred = pred.unsqueeze(2)
            # (n * B, K, out, X, Y) -> (B, K, n * out, X, Y), windows in order
            n = len(starts)
            pred = pred.reshape(n, b, *pred.shape[1:]).permute(1, 2, 0, 3, 4, 5).flatten(2, 3)
            outputs.append(pred)
        out = torch.cat(outputs, dim=2)[:, :, :depth]
        return out.movedim(2, axis)
