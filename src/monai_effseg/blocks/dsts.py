"""Depthwise spatiotemporal separate (DSTS) convolution and block (Zhang et al., "Light-Weight Hybrid Convolutional
Network for Liver Tumour Segmentation", IJCAI 2019), as described in Tustumi, "Automatic Liver Tumor Segmentation
from CT Images Based on 2D and 3D Deep Neural Networks" (thesis, 2020), section 2.1.9, Fig. 2.6.

:class:`DSTSConv` runs two depthwise branches on all ``c`` input channels in parallel, a *temporal* one along the first
spatial axis (the slice axis: kernel ``k x 1 x 1``) and a *spatial* one across the others (``1 x k x k``), and
concatenates them (``2c`` channels). The ``"dsts"`` block follows it with BN -> act -> pointwise ``2c -> out`` -> BN
-> [SE], plus the identity when size and width are kept (the inverted-residual layout of the thesis' other blocks,
with the depthwise conv replaced by DSTS and no expansion: the DSTS tables have none). The SE sits on the block's
``out`` channels, with squeeze width ``int(in * se_ratio)``: with it, the parameter differences between the three
DSTS presets equal the thesis' Table 4.3 differences (top -> default +0.84M, default -> bottom +0.36M); with the SE
on the ``2c`` DSTS features they would be +1.00M and +0.43M.

Weights of the convolutions (BN, SE and biases not counted), for ``c`` input and ``o`` output channels:
``c * (k + k**2)`` depthwise + ``2c * o`` pointwise; at ``k = 3`` and ``o = c``: **2c^2 + 12c**. The thesis' "c^2 + 12c"
is what the two branches cost with a ``c -> c`` pointwise, which needs the branches *summed*; we follow its wording
("A pointwise convolution combines the features after a concatenation"), so the pointwise sees ``2c`` channels.

**2D.** In 2D there is no slice axis (the 2.5D network takes the slices as channels), so DSTS degenerates to the same
rule on two axes: a ``k x 1`` branch along the first axis and a ``1 x k`` branch along the second, concatenated:
an axis-separable depthwise conv with ``2kc`` depthwise weights.

**Fused form.** Both branches are one grouped conv: ``groups = c``, two output channels per input channel, whose
``k^d`` kernels are the branch kernels zero-padded to a full cube (a cross in 2D). One kernel call instead of two
convs plus a concatenation copy (the fragmentation ShuffleNetV2's guideline G3 warns about, and the thesis blames for
DSTS' slowness, section 4.1.2); the output order is the same interleaved one (temporal_i, spatial_i) in both forms,
so the form can change at any time without touching the weights.

**Folded form (3D, NCDHW, CPU).** PyTorch's CPU backend has no fast depthwise 3D convolution: both branches, and
above all their backward pass, run its slow reference path. Each branch is a 2D problem in disguise, so in 3D it runs
as a 2D depthwise conv, which has fast kernels: the ``1 x k x k`` branch folds depth into the batch, and the
``k x 1 x 1`` branch runs a ``k x 1`` kernel over ``(D, H*W)`` (a 1-wide kernel with stride ``s`` is the subsampling
``[::s]``, done before the fold). Same weights, same outputs (docs/deviations.md, "DSTS in 3D on CPU").
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_effseg.blocks import layers
from monai_effseg.blocks.layers import LayerSpec
from monai_effseg.blocks.mbconv import ConvNorm, ResidualBlock, has_residual
from monai_effseg.blocks.mobilenet import LITE_NORM
from monai_effseg.blocks.registry import KernelOrStride, register_block
from monai_effseg.blocks.se import SqueezeExcitation, se_channels

__all__ = ["DSTS_ACT", "DSTSConv", "DSTSBlock", "dsts_conv_weights"]

DSTS_ACT: tuple = ("relu", {"inplace": True})


def dsts_conv_weights(in_channels: int, out_channels: int, kernel_size: int = 3, spatial_dims: int = 3) -> int:
    """Convolution weights of a DSTS block: ``c (k + k^(d-1)) + 2 c o`` (the module docstring's formula)."""
    return in_channels * (kernel_size + kernel_size ** (spatial_dims - 1)) + 2 * in_channels * out_channels


def _single_kernel(kernel_size: KernelOrStride) -> int:
    if isinstance(kernel_size, int):
        return kernel_size
    sizes = set(kernel_size)
    if len(sizes) != 1:
        raise ValueError(f"DSTS splits one cubic kernel into its branches; got kernel {kernel_size}")
    return int(sizes.pop())


class DSTSConv(nn.Module):
    """The two parallel depthwise branches, concatenated channel-interleaved: ``c -> 2c`` channels.

    Args:
        spatial_dims: 2 or 3; the first spatial axis is the temporal (slice) axis.
        channels: input channels ``c``.
        kernel_size: ``k`` of both branches.
        stride: stride of both branches (one int or one per axis).
        fused: run both branches as one grouped conv (see the module docstring; same outputs, same weights) where it
            pays: 3x3 kernels on channels-last inputs, which oneDNN runs as one depthwise kernel. Elsewhere the two
            branches run: on NCDHW tensors PyTorch sends a depth-multiplier-2 grouped 3D conv to its slow reference
            path, and at k = 5 the zero-padded cube costs 4x the MACs.
    """

    def __init__(
        self, spatial_dims: int, channels: int, kernel_size: int = 3, stride: KernelOrStride = 1, fused: bool = True
    ) -> None:
        super().__init__()
        k = _single_kernel(kernel_size)
        ones = (1,) * (spatial_dims - 1)
        self.temporal = layers.conv(spatial_dims, channels, channels, (k,) + ones, stride, groups=channels, bias=False)
        self.spatial = layers.conv(spatial_dims, channels, channels, (1,) + (k,) * (spatial_dims - 1), stride,
                                   groups=channels, bias=False)  # fmt: skip
        self.channels = channels
        self.kernel_size = k
        self.spatial_dims = spatial_dims
        self.stride: List[int] = list(ensure_tuple_rep(stride, spatial_dims))
        self.fused = fused

    def _channels_last(self, x: torch.Tensor) -> bool:
        if x.dim() == 5:
            return x.is_contiguous(memory_format=torch.channels_last_3d)
        return x.is_contiguous(memory_format=torch.channels_last)

    def fused_weight(self) -> torch.Tensor:
        """The ``(2c, 1, k, ..., k)`` kernel of the fused grouped conv: each branch kernel zero-padded to a cube."""
        r = self.kernel_size // 2
        inner: List[int] = [r, r] * (self.spatial_dims - 1)  # F.pad lists the last axis first
        temporal = F.pad(self.temporal.weight, inner + [0, 0])
        spatial = F.pad(self.spatial.weight, [0, 0] * (self.spatial_dims - 1) + [r, r])
        return torch.stack([temporal, spatial], dim=1).flatten(0, 1)

    def folded_branches(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The two 3D branches as 2D depthwise convs on reshaped NCDHW views (see "Folded form")."""
        r = self.kernel_size // 2
        sd, sh, sw = self.stride[0], self.stride[1], self.stride[2]
        n, c = x.shape[0], x.shape[1]
        along_depth = x[:, :, :, ::sh, ::sw]
        h, w = along_depth.shape[3], along_depth.shape[4]
        t = F.conv2d(along_depth.reshape(n, c, x.shape[2], h * w), self.temporal.weight.squeeze(-1), None,
                     [sd, 1], [r, 0], [1, 1], c)  # fmt: skip
        t = t.reshape(n, c, t.shape[2], h, w)
        slices = x[:, :, ::sd].transpose(1, 2)
        d = slices.shape[1]
        s = F.conv2d(slices.reshape(n * d, c, x.shape[3], x.shape[4]), self.spatial.weight.squeeze(2), None,
                     [sh, sw], [r, r], [1, 1], c)  # fmt: skip
        s = s.reshape(n, d, c, h, w).transpose(1, 2)
        return [t, s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and self.kernel_size == 3 and self._channels_last(x):
            padding: List[int] = [self.kernel_size // 2] * self.spatial_dims
            if self.spatial_dims == 3:
                return F.conv3d(x, self.fused_weight(), None, self.stride, padding, 1, self.channels)
            return F.conv2d(x, self.fused_weight(), None, self.stride, padding, 1, self.channels)
        # measured on CPU only; CUDA has depthwise 3D kernels, so it keeps the plain branches
        if self.spatial_dims == 3 and x.device.type == "cpu" and not self._channels_last(x):
            branches = self.folded_branches(x)
        else:
            branches = [self.temporal(x), self.spatial(x)]
        return torch.stack(branches, dim=2).flatten(1, 2)


@register_block("dsts")
class DSTSBlock(ResidualBlock):
    """DSTS conv (stride) -> BN -> act -> pointwise ``2c -> out`` -> BN -> [SE], plus the identity when it fits.

    Args:
        se_ratio: squeeze width ``int(in_channels * se_ratio)`` (EfficientNet's rule), on the ``out`` channels.
        fused: see :class:`DSTSConv`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelOrStride = 3,
        stride: KernelOrStride = 1,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        norm: LayerSpec = LITE_NORM,
        act: LayerSpec = DSTS_ACT,
        drop_connect_rate: float = 0.0,
        fused: bool = True,
    ) -> None:
        if expand_ratio != 1:
            raise ValueError(f"the DSTS block has no expansion (Tustumi's Tables A.21-A.23); got expand={expand_ratio}")
        mid = 2 * in_channels
        body = nn.Sequential()
        body.add_module("dsts", DSTSConv(spatial_dims, in_channels, _single_kernel(kernel_size), stride, fused))
        body.add_module("norm", layers.norm(norm, spatial_dims, mid))
        body.add_module("act", layers.act(act))
        body.add_module("project", ConvNorm(spatial_dims, mid, out_channels, norm))
        if se_ratio > 0:
            squeeze = se_channels(in_channels, se_ratio)
            body.add_module("se", SqueezeExcitation(spatial_dims, out_channels, squeeze, act, inplace=True))
        super().__init__(body, has_residual(stride, in_channels, out_channels), drop_connect_rate)
