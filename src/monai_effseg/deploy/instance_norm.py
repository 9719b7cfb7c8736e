"""InstanceNorm (+ activation) for channels-last activations at inference, in place and in cache-sized chunks.

A full-resolution decoder tensor of a 3D U-Net is hundreds of MB to GB, so every elementwise pass over it is a
trip to main memory. Eager InstanceNorm -> activation makes about eight such passes (mean, subtract, square, mean,
scale, shift, activation read and write). :func:`instance_norm_act_` reads the tensor once for its statistics (Chan
et al.'s pairwise merge of per-chunk means and centred sums of squares: as accurate as the two-pass formula) and
once more to normalise, activate and, for a squeeze-excitation block that follows, sum each channel; each step
works on a chunk of rows that stays in cache.

Missing upstream: PyTorch has no fused channels-last InstanceNorm on the CPU. ``F.instance_norm`` reshapes to
``(1, N*C, ...)``, which turns a channels-last tensor into NCDHW, and training-mode ``F.batch_norm`` (N = 1) is fast
but was 1e-4 off on an input of mean 1 and sd 3 (docs/efficientnet.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.instancenorm import _InstanceNorm

CHUNK_ELEMENTS = 2048 * 384
"""About 3 MB of float32 per chunk, so that a core's L2 holds a chunk with its temporaries (chunks of 512 to 8192
rows of 384 channels, timed by hand, differed little)."""

ROWS_PER_SUM = 64
"""Rows summed in float32 before the float64 accumulation (:func:`column_sums`)."""


def row_chunks(flats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Views of consecutive rows of ``(voxels, channels)`` matrices (the slabs of one tensor), about
    :data:`CHUNK_ELEMENTS` each."""
    step = max(1, CHUNK_ELEMENTS // flats[0].shape[1])
    return [flat[start : start + step] for flat in flats for start in range(0, flat.shape[0], step)]


def row_groups(chunk: torch.Tensor) -> List[torch.Tensor]:
    """A ``(rows, C)`` chunk as ``(groups, rows_per_group, C)`` views: groups of :data:`ROWS_PER_SUM` rows, then the
    remainder as one group. Sums within a group are float32, across groups float64 (:func:`column_sums`)."""
    rows, channels = chunk.shape
    whole = rows - rows % ROWS_PER_SUM
    groups = [chunk[:whole].view(-1, ROWS_PER_SUM, channels)] if whole else []
    return groups + ([chunk[whole:].unsqueeze(0)] if whole < rows else [])


def column_sums(chunk: torch.Tensor) -> torch.Tensor:
    """``chunk.sum(0)`` in float64: float32 sums of 64 rows at a time, then float64. As accurate as a float64 sum
    to 3e-8 and faster than PyTorch's reduction over rows; a BLAS matrix-vector product was faster still but
    summed 2048 rows in float32 (1e-6 off), which the variance of a deep network's InstanceNorms did not survive."""
    return sum(group.sum(1).double().sum(0) for group in row_groups(chunk))


def channel_moments(flats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and biased variance over the rows of ``(voxels, channels)`` matrices, in float64, in one
    pass over cache-sized chunks. Sums are taken of the data minus its first row (a float32 sum of raw values far
    from zero, e.g. a channel at 1000 +- 0.01, would lose the digits the variance needs); the chunks' means and
    centred sums of squares are merged as Chan et al. do."""
    channels = flats[0].shape[1]
    # bfloat16 activations are summed in float32 too (8-bit mantissas lose the variance)
    reference = flats[0][0].to(torch.float32, copy=True)
    mean = torch.zeros(channels, dtype=torch.float64)
    m2 = torch.zeros(channels, dtype=torch.float64)
    count = 0
    chunks = row_chunks(flats)
    for chunk in chunks:
        rows = chunk.shape[0]
        centred = chunk - reference if chunk.dtype == reference.dtype else chunk.float().sub_(reference)
        chunk_mean = column_sums(centred) / rows
        chunk_m2 = column_sums(centred.sub_(chunk_mean.float()).square_())
        delta = chunk_mean - mean
        total = count + rows
        mean += delta * (rows / total)
        m2 += chunk_m2 + delta.square() * (count * rows / total)
        count = total
    return mean + reference.double(), m2 / count


def normalising_affine(
    mean: torch.Tensor, var: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale`` and ``shift`` (float64) with ``norm(x) = x * scale + shift`` for an InstanceNorm whose
    input has these per-channel statistics (affine ``weight`` / ``bias`` optional)."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.detach().double()
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.detach().double()
    return scale, shift


def voxels_by_channel(x: torch.Tensor) -> torch.Tensor:
    """A channels-last ``(1, C, *spatial)`` tensor as a ``(voxels, C)`` view of the same memory."""
    return x.permute([0] + list(range(2, x.dim())) + [1]).reshape(-1, x.shape[1])


def is_channels_last(x: torch.Tensor) -> bool:
    if x.dim() not in (4, 5):
        return False
    return x.is_contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)


ACTIVATIONS_ = {
    None: lambda x: x,
    "relu": lambda x: F.relu_(x),
    "silu": lambda x: F.silu(x, inplace=True),
    "leaky_relu": lambda x, slope: F.leaky_relu_(x, slope),
}


def activation_name(act: Optional[nn.Module]) -> Optional[tuple]:
    """``(name, args)`` of :data:`ACTIVATIONS_` for an activation module (``(None, ())`` for none or an identity),
    or None where it has no in-place form here."""
    if act is None or isinstance(act, nn.Identity):
        return None, ()
    if isinstance(act, nn.SiLU):
        return "silu", ()
    if isinstance(act, nn.ReLU):
        return "relu", ()
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", (act.negative_slope,)
    return None


def instance_norm_act_(
    x: Union[torch.Tensor, Sequence[torch.Tensor]],
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: float,
    act: Optional[str] = None,
    act_args: tuple = (),
    channel_means: bool = False,
) -> Optional[torch.Tensor]:
    """InstanceNorm (affine if ``weight``/``bias`` are given) then ``act``, in place on the channels-last tensor
    ``x`` of one sample, or on a list of slabs of one (statistics over all of them). With ``channel_means``, returns
    the output's per-channel mean ``(C,)`` (what a squeeze-excitation block pools), else None."""
    slabs = [x] if isinstance(x, torch.Tensor) else list(x)
    flats = [voxels_by_channel(slab) for slab in slabs]
    dtype = slabs[0].dtype
    # bfloat16 activations are normalised in float32: x * scale + shift cancels the mean, and bfloat16 scale and
    # shift would move a channel far from zero by their own rounding
    compute = torch.promote_types(dtype, torch.float32)
    scale, shift = (t.to(compute) for t in normalising_affine(*channel_moments(flats), weight, bias, eps))
    activate = ACTIVATIONS_[act]
    sums = torch.zeros(flats[0].shape[1], dtype=torch.float64) if channel_means else None
    chunks = row_chunks(flats)
    for chunk in chunks:
        if chunk.dtype == compute:
            torch.addcmul(shift, chunk, scale, out=chunk)
            activate(chunk, *act_args)
        else:  # normalised and activated in float32, written back once (an out-of-place addcmul came out transposed)
            normalised = chunk.to(compute).mul_(scale).add_(shift)
            activate(normalised, *act_args)
            chunk.copy_(normalised)
        if sums is not None:
            sums += column_sums(chunk)
    return None if sums is None else (sums / sum(flat.shape[0] for flat in flats)).to(dtype)


class ChannelsLastInstanceNorm(nn.Module):
    """InstanceNorm, optionally followed by its activation, for channels-last inputs at inference, computed by
    :func:`instance_norm_act_`. ``inplace``: overwrite the input (only where nothing else reads it, e.g. a conv's
    output inside conv -> norm -> act); otherwise a copy is normalised. Training, gradients or a non-channels-last
    input run PyTorch's modules."""

    def __init__(self, norm: _InstanceNorm, act: Optional[nn.Module] = None, inplace: bool = False) -> None:
        super().__init__()
        if norm.track_running_stats:
            raise ValueError("only InstanceNorm without running statistics (nnU-Net's) is supported")
        named = activation_name(act)
        if named is None:
            raise ValueError(f"no in-place form of {act} here")
        self.norm = norm
        self.act = act if act is not None else nn.Identity()
        self.act_name, self.act_args = named
        self.inplace = inplace
        self.train(norm.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or not is_channels_last(x):
            return self.act(self.norm(x))
        if not self.inplace:
            x = x.clone()
        for sample in x.split(1):  # views: normalised in place, one sample's statistics at a time
            instance_norm_act_(sample, self.norm.weight, self.norm.bias, self.norm.eps, self.act_name, self.act_args)
        return x
