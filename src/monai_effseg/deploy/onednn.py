"""oneDNN convolutions with fused post-ops (activation, or a residual added to the output), called directly.

PyTorch's own conv dispatch sends small 3D convs and single-threaded 1x1 convs to its reference path, and offers no
conv + activation fusion in eager mode; the private ``torch.ops.mkldnn`` ops do both (docs/efficientnet.md).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any, Callable, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

logger = logging.getLogger(__name__)


def post_op(act: nn.Module) -> Optional[tuple]:
    """oneDNN's name and scalars for an activation module, or None if it cannot be fused."""
    if isinstance(act, nn.SiLU):
        return "swish", []
    if isinstance(act, nn.ReLU):
        return "relu", []
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [act.negative_slope]
    return None


# The private oneDNN ops OneDNNConv calls, by role. They are not public API: a torch build may lack them (built
# without oneDNN, or a release that renamed them), so each is looked up and checked once, and OneDNNConv falls back
# to the plain op where one is missing or broken.
ONEDNN_OPS = {
    "conv": "aten.mkldnn_convolution",
    "pointwise": "mkldnn._convolution_pointwise",
    "binary": "mkldnn._convolution_pointwise.binary",
}

_PLAIN_ACTIVATIONS = {
    "none": lambda y: y,
    "relu": lambda y: F.relu(y),
    "swish": lambda y: F.silu(y),
    "leaky_relu": lambda y, slope: F.leaky_relu(y, slope),
}


@functools.lru_cache(maxsize=None)
def _checked_op(qualified_name: str, role: str) -> Optional[Callable]:
    op: Any = torch.ops
    try:
        for part in qualified_name.split("."):
            op = getattr(op, part)
        # one tiny call against the plain op: a same-named op with another signature or result is not used
        g = torch.Generator().manual_seed(0)  # not the global generator: looking an op up draws no user randomness
        x, w, b = (torch.randn(shape, generator=g) for shape in ((1, 2, 3, 3, 3), (2, 2, 1, 1, 1), (2,)))
        args = (w, b, [0, 0, 0], [1, 1, 1], [1, 1, 1], 1)
        expected = F.conv3d(x, w, b)
        if role == "binary":
            got, expected = op(x, x, *args, "add", 1.0, None, [], ""), expected + x
        elif role == "pointwise":
            got, expected = op(x, *args, "relu", [], ""), F.relu(expected)
        else:
            got = op(x, *args)
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise RuntimeError("result differs from the plain op")
    except Exception as error:  # missing (AttributeError), or another signature or behaviour (RuntimeError, ...)
        logger.warning(f"torch.ops.{qualified_name} unusable on torch {torch.__version__} ({error}); "
                       "OneDNNConv falls back to the plain conv")  # fmt: skip
        return None
    return op


def onednn_op(role: str) -> Optional[Callable]:
    """The oneDNN op for ``role`` (a key of :data:`ONEDNN_OPS`), or ``None`` where this torch build lacks it or it
    does not compute what :class:`OneDNNConv` expects (checked once per process on a tiny input)."""
    return _checked_op(ONEDNN_OPS[role], role)


class ConvGeometry(NamedTuple):
    """A conv's stride, padding, dilation and groups, as the oneDNN ops take them."""

    stride: List[int]
    padding: List[int]
    dilation: List[int]
    groups: int

    @classmethod
    def of(cls, conv: _ConvNd) -> "ConvGeometry":
        return cls(list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)


class OneDNNConv(nn.Module):
    """A conv (optionally + activation, optionally + a residual added to its output) that always runs oneDNN, or,
    where this torch build lacks the oneDNN op (:func:`onednn_op`), the same computation with public ops."""

    def __init__(self, conv: _ConvNd, post_op: Optional[tuple] = None, residual: bool = False) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.geometry = ConvGeometry.of(conv)
        self.attr, self.scalars = post_op or ("none", [])
        self.residual = residual
        if residual and self.attr != "none":
            raise ValueError("a residual conv cannot also fuse an activation here")

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return onednn_conv(x, self.weight, self.bias, self.geometry, self.attr, self.scalars, residual)

    def plain(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The same computation with public PyTorch ops."""
        return plain_conv(x, self.weight, self.bias, self.geometry, self.attr, self.scalars, residual)


def onednn_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    geometry: ConvGeometry,
    attr: str = "none",
    scalars: Sequence = (),
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``conv(x) [+ residual]`` or ``act(conv(x))`` (``attr``: a oneDNN post-op name of :func:`post_op`) with
    oneDNN, or with public ops where this torch build lacks the oneDNN op."""
    stride, padding, dilation, groups = geometry
    args = (weight, bias, padding, stride, dilation, groups)
    if residual is not None:
        op = onednn_op("binary")
        if op:
            return op(x, residual, *args, "add", 1.0, None, [], "")
    elif attr == "none":
        op = onednn_op("conv")
        if op:
            return op(x, *args)
    else:
        op = onednn_op("pointwise")
        if op:
            return op(x, *args, attr, list(scalars), "")
    return plain_conv(x, weight, bias, geometry, attr, scalars, residual)


def plain_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    geometry: ConvGeometry,
    attr: str = "none",
    scalars: Sequence = (),
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """What :func:`onednn_conv` computes, with public PyTorch ops (used where this torch build lacks a oneDNN op)."""
    y = (F.conv3d if weight.dim() == 5 else F.conv2d)(x, weight, bias, *geometry)
    if residual is not None:
        return y + residual
    return _PLAIN_ACTIVATIONS[attr](y, *scalars)
