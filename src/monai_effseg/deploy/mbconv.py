"""Inference form of an MBConv block normalised by InstanceNorm: the FullyEfficient decoder of Martinho's thesis
("Efficient Algorithms for Medical Image Segmentation", Fig. 8).

Its blocks expand to 6x the width at full resolution (384 channels of 128^3 voxels, 3.2 GB, at the top level of
FullyEfficientUNet-b0), so the block is bound by memory traffic, not by its multiply-adds. Eager, each of the
expanded tensors is read and written about twenty times. This form keeps the block's outputs (to float32 rounding)
and removes most of those trips:

1. **InstanceNorm folded into the expand conv.** The 1x1 expand conv is linear, so its output's per-channel mean
   and variance follow from the input's mean and covariance (``W mu`` and ``w_j^T Sigma w_j``), computed on the
   narrow input. The norm becomes the conv's weight and bias, and oneDNN applies SiLU as a post-op.
2. **Slabs.** The expand and depthwise convs run slab by slab along the first spatial axis (each slab's expanded
   input with a one-slice halo, recomputed): the expanded tensor never exists whole, only the depthwise output does
   (``benchmarks/bench_forward_memory.py --no-slabs`` measures the difference).
3. **The depthwise conv's InstanceNorm, SiLU and the squeeze-excitation pooling in two passes**
   (:func:`~monai_effseg.deploy.instance_norm.instance_norm_act_`).
4. **The squeeze-excitation gate folded into the project conv.** ``project(x * gate) = (W diag(gate)) x``: the
   per-channel scaling of the expanded tensor becomes a scaling of a small weight, per sample.

Measured times and peaks: docs/efficientnet.md, "The FullyEfficient decoder on a CPU". What still bounds the block
is oneDNN's 3D depthwise conv and the passes over the depthwise output, which InstanceNorm's global statistics
require to be written whole.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from monai_effseg.blocks.mbconv import MBConv
from monai_effseg.blocks.se import SqueezeExcitation
from monai_effseg.deploy.instance_norm import (
    activation_name,
    channel_moments,
    instance_norm_act_,
    is_channels_last,
    normalising_affine,
    row_chunks,
    row_groups,
    voxels_by_channel,
)
from monai_effseg.deploy.onednn import ConvGeometry, onednn_conv, post_op

SLAB_ELEMENTS = 128 * 2**20
"""Elements of one expanded slab (512 MB in float32): 20 of 128 slices at 384 channels, so the halo recomputed per
slab adds 10% to the expand conv."""


def _instance_norm(module: nn.Module) -> bool:
    norm = getattr(module, "norm", None)
    return isinstance(norm, _InstanceNorm) and not norm.track_running_stats


def _conv(module: nn.Module) -> Optional[_ConvNd]:
    conv = getattr(module, "conv", None)
    plain = isinstance(conv, _ConvNd) and not conv.transposed and not isinstance(conv.padding, str)
    return conv if plain and conv.padding_mode == "zeros" else None


def channel_covariance(flat: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Biased covariance ``(C, C)`` of the columns of a ``(voxels, C)`` matrix around ``mean``, in float64: float32
    products summed over 64 rows at a time (one batched GEMM per group of a cache-sized chunk), then in float64.
    bfloat16 input is centred and multiplied in float32 (a bf16 GEMM would round each 64-row sum to 8 bits)."""
    compute = torch.promote_types(flat.dtype, torch.float32)
    centre = mean.to(compute)
    total = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
    for chunk in row_chunks([flat]):
        for group in row_groups(chunk.to(compute) - centre):
            total += torch.bmm(group.transpose(1, 2), group).double().sum(0)
    return total / flat.shape[0]


class InstanceNormMBConv(nn.Module):
    """:class:`~monai_effseg.blocks.mbconv.MBConv` with InstanceNorm after every conv, for channels-last inference
    (see the module docstring). Training, gradients or another memory format run the block itself."""

    def __init__(self, block: MBConv) -> None:
        super().__init__()
        if not self.supports(block):
            raise ValueError("needs an MBConv with InstanceNorm (no running statistics) after each conv")
        self.block = block
        body = block.body
        self.expand = getattr(body, "expand", None)
        self.depthwise, self.se, self.project = body.depthwise, body.se, body.project
        self.act_name, self.act_args = activation_name(self.depthwise.act)
        self.expand_post_op = post_op(self.expand.act) if self.expand is not None else None
        self.train(block.training)

    @staticmethod
    def supports(module: nn.Module) -> bool:
        if type(module) is not MBConv:
            return False
        body = module.body
        expand = getattr(body, "expand", None)
        expand_ok = expand is None or (
            _instance_norm(expand)
            and _conv(expand) is not None
            and _conv(expand).kernel_size == (1,) * len(_conv(expand).kernel_size)
            and _conv(expand).bias is None
            and post_op(expand.act) is not None
        )
        return (
            expand_ok
            and _conv(body.depthwise) is not None
            and _instance_norm(body.depthwise)
            and activation_name(body.depthwise.act) is not None
            and isinstance(body.se, (SqueezeExcitation, nn.Identity))
            and _conv(body.project) is not None
            and _instance_norm(body.project)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or x.dim() not in (4, 5):
            return self.block(x)
        if not is_channels_last(x):  # e.g. a concatenation with an NCDHW upsampled tensor: one copy of the input
            x = x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)
        return torch.cat([self._one_sample(sample) for sample in x.split(1)]) if x.shape[0] > 1 else self._one_sample(x)

    def _one_sample(self, x: torch.Tensor) -> torch.Tensor:
        slabs = self._expand_depthwise(x)
        norm = self.depthwise.norm
        pooled = instance_norm_act_(slabs, norm.weight, norm.bias, norm.eps, self.act_name, self.act_args,
                                    channel_means=isinstance(self.se, SqueezeExcitation))  # fmt: skip
        project = self.project.conv
        weight = project.weight
        if pooled is not None:
            weight = weight * self._gate(pooled).view([1, -1] + [1] * (weight.dim() - 2))
        outs = []
        while slabs:  # each expanded slab is freed as soon as it is projected
            outs.append(onednn_conv(slabs.pop(0), weight, project.bias, ConvGeometry.of(project)))
        out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        norm = self.project.norm
        instance_norm_act_(out, norm.weight, norm.bias, norm.eps)
        return out.add_(x) if self.block.residual else out

    def _expand_depthwise(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The depthwise conv's output as slabs along the first spatial axis. Each slab's expanded input is computed
        with its halo and freed before the next: the expanded tensor (at the top level of FullyEfficientUNet-b0 at
        128^3, 384 channels, 3.2 GB) never exists whole."""
        dw = self.depthwise.conv
        stride, padding, dilation, groups = ConvGeometry.of(dw)
        expand = self._folded_expand(x) if self.expand is not None else None
        depth, halo = x.shape[2], padding[0]
        per_slice = dw.in_channels * x[0, 0, 0].numel()
        thickness = depth if stride[0] != 1 or dilation[0] != 1 else max(2 * halo + 1, SLAB_ELEMENTS // per_slice)
        slabs = []
        for start in range(0, depth, thickness):
            stop = min(start + thickness, depth)
            lo, hi = max(start - halo, 0), min(stop + halo, depth)
            hidden = x[:, :, lo:hi]
            if expand is not None:
                hidden = onednn_conv(hidden, *expand)
            at_border = lo == 0 or hi == depth  # zero padding there; inside, the halo is real data
            pad = [halo if at_border else 0] + padding[1:]
            y = onednn_conv(hidden, dw.weight, dw.bias, ConvGeometry(stride, pad, dilation, groups))
            first = lo + halo - pad[0]  # the slice index of y's first output
            slabs.append(y[:, :, start - first : stop - first])
        return slabs

    def _folded_expand(self, x: torch.Tensor) -> tuple:
        """The expand conv's arguments for :func:`onednn_conv` with its InstanceNorm folded into weight and bias
        (from the input's moments) and its activation as oneDNN's post-op."""
        conv, norm = self.expand.conv, self.expand.norm
        flat = voxels_by_channel(x)
        mean, _ = channel_moments([flat])
        covariance = channel_covariance(flat, mean)
        weight = conv.weight.detach().reshape(conv.out_channels, -1).double()
        out_var = ((weight @ covariance) * weight).sum(1)
        scale, shift = normalising_affine(weight @ mean, out_var, norm.weight, norm.bias, norm.eps)
        folded = (weight * scale[:, None]).to(x.dtype).reshape(conv.weight.shape)
        attr, scalars = self.expand_post_op
        return (folded, shift.to(x.dtype), ConvGeometry.of(conv), attr, scalars)

    def _gate(self, pooled: torch.Tensor) -> torch.Tensor:
        se = self.se
        squeezed = pooled.view([1, -1] + [1] * len(se.spatial_axes))
        return torch.sigmoid(se.excite(se.act(se.squeeze(squeezed)))).flatten()
