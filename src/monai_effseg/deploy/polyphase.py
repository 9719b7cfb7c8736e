"""``conv(transposed_conv(x))`` as one convolution at the coarse resolution (polyphase decomposition).

A U-Net decoder level upsamples with a transposed conv whose kernel equals its stride (every fine voxel is one
coarse voxel times one kernel tap) and then runs a stride-1 conv on the result. Both are linear, so for each of the
``prod(stride)`` output phases (the fine voxel's position inside its coarse voxel) the pair is a single conv on the
coarse input: per dimension, a kernel-3 conv after stride-2 upsampling reads only 2 coarse voxels. At nnU-Net's
decoder widths (the coarse input has twice the fine channels) that is ``8 * 2C * C`` multiply-adds per fine voxel
instead of ``27 * C * C + 2C * C``, 45% fewer, and the upsampled tensor is never written. The phases are then
interleaved into the fine grid. Exact up to float rounding, including the zero-padded borders (the upsampled grid
is zero-padded exactly where the coarse one is). Used by :func:`~monai_effseg.deploy.optimize.optimize_for_inference`.
"""

from __future__ import annotations

import itertools
import math
from typing import List, Tuple

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd


def _phase_taps(stride: int, kernel: int, padding: int) -> Tuple[torch.Tensor, List[int], int]:
    """For one dimension: ``taps[r, j, t, m] = 1`` if fine tap ``t`` of output phase ``r`` reads coarse offset
    ``first[r] + j`` through transposed-conv tap ``m``; also each phase's first offset and the window width."""
    offsets = [[(r + t - padding) // stride for t in range(kernel)] for r in range(stride)]
    first = [min(row) for row in offsets]
    width = max(max(row) - lo + 1 for row, lo in zip(offsets, first))
    taps = torch.zeros(stride, width, kernel, stride, dtype=torch.float64)
    for r, t in itertools.product(range(stride), range(kernel)):
        taps[r, offsets[r][t] - first[r], t, (r + t - padding) % stride] = 1.0
    return taps, first, width


class UpsampledConv(nn.Module):
    """``conv(up(x))`` for a bias-free transposed conv ``up`` with kernel == stride and a stride-1, "same"-padded
    ``conv``, computed at ``x``'s resolution (module docstring)."""

    def __init__(self, up: _ConvNd, conv: _ConvNd) -> None:
        super().__init__()
        if not self.supports(up, conv):
            raise ValueError(f"cannot fold {up} into {conv}")
        dims = conv.weight.dim() - 2
        self.stride: List[int] = list(up.stride)
        self.out_channels = conv.weight.shape[0]
        per_dim = [_phase_taps(s, k, p) for s, k, p in zip(up.stride, conv.kernel_size, conv.padding)]
        self.pad_low: List[int] = [max(0, -min(first)) for _, first, _ in per_dim]
        pad_high = [max(0, max(first) + width - 1) for _, first, width in per_dim]
        self.starts: List[List[int]] = [[f + lo for f in first] for (_, first, _), lo in zip(per_dim, self.pad_low)]
        self.extra_pad: List[int] = []  # F.pad's (last dim first) for dims whose two sides differ
        if self.pad_low != pad_high:
            for lo, hi in zip(reversed(self.pad_low), reversed(pad_high)):
                self.extra_pad += [lo, hi]

        # W[o, u, t...] (conv), T[i, u, m...] (transposed conv), taps per dim [r, j, t, m] ->
        # weight[(r...), o, i, j...]: one output block of out_channels per phase.
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # spatial subscripts; o, u, i name the channels
        r, j, t, m = (letters[k * dims : (k + 1) * dims] for k in range(4))
        spec = f"ou{t},iu{m}," + ",".join(f"{r[d]}{j[d]}{t[d]}{m[d]}" for d in range(dims)) + f"->{r}oi{j}"
        weight = torch.einsum(spec, conv.weight.detach().double(), up.weight.detach().double(),
                              *(taps for taps, _, _ in per_dim))  # fmt: skip
        phases = math.prod(self.stride)
        weight = weight.reshape(phases * self.out_channels, *weight.shape[dims + 1 :]).to(conv.weight.dtype)
        bias = None if conv.bias is None else conv.bias.detach().repeat(phases)
        padding = self.pad_low if not self.extra_pad else [0] * dims
        conv_cls = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv = conv_cls(weight.shape[1], weight.shape[0], weight.shape[2:], padding=padding, bias=bias is not None)
        self.conv.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            self.conv.bias = nn.Parameter(bias, requires_grad=False)

    @staticmethod
    def supports(up: nn.Module, conv: nn.Module) -> bool:
        return (
            isinstance(up, _ConvNd) and up.transposed and up.bias is None and up.groups == 1
            and tuple(up.kernel_size) == tuple(up.stride) and not any(up.padding) and not any(up.output_padding)
            and all(d == 1 for d in up.dilation)
            and isinstance(conv, (nn.Conv2d, nn.Conv3d)) and conv.groups == 1 and conv.padding_mode == "zeros"
            and all(s == 1 for s in conv.stride) and all(d == 1 for d in conv.dilation)
            and not isinstance(conv.padding, str)
            and all(k % 2 == 1 and p == k // 2 for k, p in zip(conv.kernel_size, conv.padding))
            and up.weight.shape[1] == conv.weight.shape[1]
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        layout = fmt if x.is_contiguous(memory_format=fmt) and not x.is_contiguous() else torch.contiguous_format
        coarse = list(x.shape[2:])
        y = self.conv(nn.functional.pad(x, self.extra_pad) if self.extra_pad else x)
        y = y.unflatten(1, self.stride + [self.out_channels])  # (N, *phase, C, *coarse window)
        fine = [n * s for n, s in zip(coarse, self.stride)]
        batch_channels = [x.shape[0], self.out_channels]
        out = torch.empty(batch_channels + fine, dtype=y.dtype, device=y.device, memory_format=layout)
        # (N, C, n1, s1, n2, s2, ...): fine index n * s + r split into (n, r)
        interleaved = out.view(batch_channels + [v for n, s in zip(coarse, self.stride) for v in (n, s)])
        for phase in itertools.product(*(range(s) for s in self.stride)):
            target = interleaved[(slice(None), slice(None)) + tuple(v for r in phase for v in (slice(None), r))]
            window = tuple(slice(st[r], st[r] + n) for st, r, n in zip(self.starts, phase, coarse))
            target.copy_(y[(slice(None),) + phase + (slice(None),) + window])
        return out
