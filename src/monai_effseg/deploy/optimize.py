"""CPU inference speed-ups that keep a network's outputs (to float32 rounding) and apply to any network of the zoo.

:func:`optimize_for_inference` (per model) combines:

1. **BatchNorm folding**: an eval-mode BN after a conv is a per-channel affine map, merged into the conv's weights
   and bias (EfficientNet encoders have one BN per conv; nnU-Net has none).
2. **Channels-last activations** (``torch.channels_last_3d``): oneDNN convolutions then read and write NDHWC directly
   instead of reordering NCDHW to a blocked layout and back around every conv. Measured on 1 thread at 96^3:
   depthwise 3x3x3 7x faster, transposed conv (k2 s2) 5.6x, dense 3x3x3 convs 1.3-1.4x.
3. **oneDNN for every conv** (:class:`OneDNNConv`): PyTorch's backend heuristic, written for 2D images, sends 3D convs
   with ``N*C*D*H <= 20480`` (the 1-channel stem, small deep levels) and single-threaded 1x1 convs to its reference
   im2col path, which also converts channels-last tensors back (1 thread, 96^3: stem 0.127 s -> 0.061 s,
   segmentation head 0.31 s -> 0.02 s).
4. **A channels-last InstanceNorm** (:class:`~monai_effseg.deploy.instance_norm.ChannelsLastInstanceNorm`):
   PyTorch's InstanceNorm reshapes to ``(1, N*C, ...)``, which turns a channels-last tensor back into NCDHW and
   makes it 3x slower. Inside conv -> InstanceNorm -> activation it also applies the activation, in place on the
   conv's output, in two passes over cache-sized chunks instead of about eight over the whole tensor.
5. **Activation and residual fusion** where a conv is directly followed by ReLU/LeakyReLU/SiLU (after BN folding) or
   ends a residual block: oneDNN applies them as post-ops while the conv output is still in cache.
6. **No decoder concatenation** (:class:`ConcatFreeUNetDecoder`): the first conv of each nnU-Net decoder level runs
   on the upsampled and the skip tensor separately (its weight split in two) and adds, instead of first writing
   their concatenation: at full resolution that copy is a 2C-channel tensor written and read once more.
7. **Upsampling folded into that conv** (:class:`~monai_effseg.deploy.polyphase.UpsampledConv`): the transposed conv
   and the conv on its output run as one conv at the coarse resolution, one output block per phase, then
   interleaved: 45% fewer multiply-adds on that path, and the upsampled tensor is never written.
8. **The FullyEfficient decoder's MBConv blocks** (:class:`~monai_effseg.deploy.mbconv.InstanceNormMBConv`): the
   expand conv's InstanceNorm folded into its weights from the input's moments, the squeeze-excitation gate folded
   into the project conv, and the expanded tensor computed in slabs that never exist whole.

Optionally (``bf16=True``, not exact): weights and activations in bfloat16, inputs cast on the way in and outputs
returned in float32. On CPUs with native bf16 dot products (:func:`native_bf16`: AMX tiles, AVX-512 BF16) oneDNN
runs bf16 convs on them, 1.7-3x faster than float32 (``python benchmarks/bench_efficientnet_speed.py --modes
optimized bf16``; figures in docs/efficientnet.md). InstanceNorm statistics are still summed in float32/float64 and applied in float32.
Whether a trained network keeps its answer is checked per bundle (docs/fast_cpu_inference.md).

:func:`keep_freed_memory` (per process) stops glibc from returning freed memory to the OS: a 3D U-Net allocates
and frees hundreds of MB per layer, and every fresh allocation otherwise costs page faults and kernel zeroing
(1 thread, 128^3: PlainUNet 9.1 s -> 7.3 s).

What did not help is recorded in docs/efficientnet.md.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import sys
from typing import List, Optional, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from monai_effseg.blocks.conv import ConvNormAct
from monai_effseg.blocks.mbconv import ResidualBlock
from monai_effseg.decoders.unet import UNetDecoder
from monai_effseg.deploy.instance_norm import ChannelsLastInstanceNorm, activation_name
from monai_effseg.deploy.mbconv import InstanceNormMBConv
from monai_effseg.deploy.onednn import OneDNNConv, post_op
from monai_effseg.deploy.polyphase import UpsampledConv

logger = logging.getLogger(__name__)


def keep_freed_memory() -> bool:
    """Make glibc serve large allocations from the heap and keep freed memory for reuse (``mallopt``), instead of
    mapping fresh pages for every tensor. Process-wide and irreversible: the process keeps its peak memory. Returns
    whether it took effect (Linux with glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def fold_batch_norms(model: nn.Module) -> int:
    """Merge every eval-mode BatchNorm into the conv before it, in place, for modules that hold them as ``conv`` and
    ``norm`` (:class:`~monai_effseg.blocks.ConvNormAct` and the MBConv projections). Returns how many were folded."""
    folded = 0
    for module in model.modules():
        conv, norm = getattr(module, "conv", None), getattr(module, "norm", None)
        if isinstance(conv, _ConvNd) and isinstance(norm, _BatchNorm) and not conv.transposed:
            module.conv = fuse_conv_bn_eval(conv.eval(), norm.eval())
            module.norm = nn.Identity()
            folded += 1
    return folded


class FusedResidualBlock(nn.Module):
    """Inference form of :class:`~monai_effseg.blocks.mbconv.ResidualBlock`: the last conv adds the input itself."""

    def __init__(self, body: nn.Sequential, projection: OneDNNConv) -> None:
        super().__init__()
        self.body = body
        self.projection = projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.body(x), x)


def _output_channels(up: nn.Module) -> int:
    """Channels out of an upsampling module, read off its last conv's weight (pruning may have narrowed it)."""
    conv = [m for m in up.modules() if isinstance(m, _ConvNd)][-1]
    return conv.weight.shape[1] * conv.groups if conv.transposed else conv.weight.shape[0]


class SplitInputConvNormAct(nn.Module):
    """A :class:`~monai_effseg.blocks.ConvNormAct` whose input is ``cat([a, b])``, taking ``a`` and ``b`` apart:
    ``conv(cat([a, b])) == conv_a(a) + conv_b(b)`` with the weight split along its input channels."""

    def __init__(self, block: ConvNormAct, first_channels: int) -> None:
        super().__init__()
        conv = block.conv
        self.conv_a, self.conv_b = copy.deepcopy(conv), copy.deepcopy(conv)
        halves = (conv.weight[:, :first_channels], conv.weight[:, first_channels:])
        for part, weight in zip((self.conv_a, self.conv_b), halves):
            part.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
            part.in_channels = weight.shape[1]
        self.conv_b.bias = None  # the bias is added once, by conv_a
        self.norm = block.norm
        self.act = block.act

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv_b, OneDNNConv):
            y = self.conv_b(b, self.conv_a(a))  # oneDNN adds conv_a's output while conv_b's is in cache
        else:
            y = self.conv_a(a) + self.conv_b(b)
        return self.act(self.norm(y))


class ConcatFreeUNetDecoder(nn.Module):
    """Inference form of :class:`~monai_effseg.decoders.unet.UNetDecoder` (eval mode: the last head only) whose
    levels never build ``cat([upsampled, skip])`` (step 6 of the module docstring)."""

    def __init__(self, decoder: UNetDecoder, fold_upsampling: bool = True) -> None:
        super().__init__()
        self.ups = nn.ModuleList(decoder.ups)
        self.firsts = nn.ModuleList(
            SplitInputConvNormAct(stage[0], _output_channels(up)) for stage, up in zip(decoder.stages, decoder.ups)
        )  # fmt: skip
        for i, first in enumerate(self.firsts):
            if fold_upsampling and UpsampledConv.supports(self.ups[i], first.conv_a):
                first.conv_a = UpsampledConv(self.ups[i], first.conv_a)  # step 7 of the module docstring
                self.ups[i] = nn.Identity()
        self.rests = nn.ModuleList(nn.Sequential(*list(stage.children())[1:]) for stage in decoder.stages)
        self.head = decoder.heads[-1]

    @staticmethod
    def supports(decoder: nn.Module) -> bool:
        return type(decoder) is UNetDecoder and all(
            isinstance(stage, nn.Sequential) and type(stage[0]) is ConvNormAct for stage in decoder.stages
        )

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = features[:-1]
        for i, (up, first, rest) in enumerate(zip(self.ups, self.firsts, self.rests)):
            x = rest(first(up(x), skips[len(skips) - 1 - i]))
        return self.head(x)


def _without_concatenation(model: nn.Module, fold_upsampling: bool) -> int:
    """Swap every supported :class:`UNetDecoder` for a :class:`ConcatFreeUNetDecoder`, in place; returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if ConcatFreeUNetDecoder.supports(child):
                setattr(module, name, ConcatFreeUNetDecoder(child, fold_upsampling))
                swapped += 1
    return swapped


def _onednn_capable(module: nn.Module) -> bool:
    return (
        isinstance(module, (nn.Conv2d, nn.Conv3d))
        and not isinstance(module.padding, str)
        and module.padding_mode == "zeros"
    )


def _fusable_conv_act(module: nn.Module) -> bool:
    """conv -> (folded, now identity) norm -> fusable activation, held as ``conv``/``norm``/``act``."""
    return (
        _onednn_capable(getattr(module, "conv", None))
        and isinstance(getattr(module, "norm", None), nn.Identity)
        and post_op(getattr(module, "act", None)) is not None
        and len(list(module.children())) == 3
    )


def _instance_norm_then_act(module: nn.Module) -> bool:
    """conv -> InstanceNorm -> activation with an in-place form, held as ``conv``/``norm``/``act``, where the norm
    reads only the conv's output (:class:`ConvNormAct`, :class:`SplitInputConvNormAct`)."""
    return (
        isinstance(module, (ConvNormAct, SplitInputConvNormAct))
        and isinstance(getattr(module, "norm", None), _InstanceNorm)
        and not module.norm.track_running_stats
        and activation_name(getattr(module, "act", None)) is not None
    )


def _fusable_residual(module: nn.Module) -> bool:
    body = getattr(module, "body", None)
    last = body[-1] if isinstance(body, nn.Sequential) and len(body) > 1 else None
    return (
        isinstance(module, ResidualBlock)
        and module.residual
        and last is not None
        and _onednn_capable(getattr(last, "conv", None))
        and isinstance(getattr(last, "norm", None), nn.Identity)
        and len(list(last.children())) == 2
    )


def _swap_modules(model: nn.Module, fuse: bool) -> None:
    for name, child in model.named_children():
        if isinstance(child, (ChannelsLastInstanceNorm, InstanceNormMBConv)):
            continue  # already in inference form; its inner modules are the originals it falls back to
        if fuse and InstanceNormMBConv.supports(child):
            setattr(model, name, InstanceNormMBConv(child))
            continue
        if fuse and _instance_norm_then_act(child):
            child.norm = ChannelsLastInstanceNorm(child.norm, child.act, inplace=True)  # on the conv's fresh output
            child.act = nn.Identity()
        if isinstance(child, _InstanceNorm):
            setattr(model, name, ChannelsLastInstanceNorm(child))
        elif _onednn_capable(child):
            setattr(model, name, OneDNNConv(child))
        elif isinstance(child, SplitInputConvNormAct) and _onednn_capable(child.conv_b):
            child.conv_b = OneDNNConv(child.conv_b)
            _swap_modules(child, fuse)
        elif fuse and _fusable_conv_act(child):
            setattr(model, name, OneDNNConv(child.conv, post_op(child.act)))
        elif fuse and _fusable_residual(child):
            body = nn.Sequential(*list(child.body.children())[:-1])
            _swap_modules(body, fuse)
            setattr(model, name, FusedResidualBlock(body, OneDNNConv(child.body[-1].conv, residual=True)))
        else:
            _swap_modules(child, fuse)


def _contiguous(output: Union[torch.Tensor, List[torch.Tensor]]):
    if isinstance(output, torch.Tensor):
        return output.contiguous()
    return [o.contiguous() for o in output]


def to_channels_last(model: nn.Module, spatial_dims: int = 3, fuse: bool = True) -> nn.Module:
    """Channels-last weights and activations with oneDNN convs, in place (steps 2-5 of the module docstring). Inputs
    are converted on the way in and outputs returned contiguous, so callers see no difference: by ``model`` itself,
    or, for a model that names ``inference_stages`` (sub-networks that inferers call on their own, e.g. a cascade's
    ``stage1`` and ``stage2``), by each of those. oneDNN convs only for a model on the CPU."""
    fmt = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    model.to(memory_format=fmt)
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if torch.backends.mkldnn.is_available() and on_cpu:
        _swap_modules(model, fuse)
    for entry in _entries(model):
        entry.register_forward_pre_hook(lambda module, args: tuple(a.contiguous(memory_format=fmt) for a in args))
        entry.register_forward_hook(lambda module, args, output: _contiguous(output))
    return model


def native_bf16() -> Optional[str]:
    """The instructions this CPU has for bfloat16 dot products with float32 accumulation, which oneDNN's bf16 convs
    use: ``"AMX"`` (tiles; Intel Sapphire Rapids and newer), ``"AVX-512 BF16"`` (AMD Zen 4 and newer, Intel Cooper
    Lake), or None. Without them oneDNN emulates bf16 with float32 arithmetic, so bundles use float32 there. Per
    window (docs/efficientnet.md): about 3x float32's speed on AMX, 1.8x with AVX-512 BF16 on a Zen 5 EPYC."""
    for name, query in (("AMX", "_is_amx_tile_supported"), ("AVX-512 BF16", "_is_avx512_bf16_supported")):
        try:  # private queries; torch 2.13 has no public one
            if getattr(torch.cpu, query)():
                return name
        except (AttributeError, RuntimeError):
            continue
    return None


def _entries(model: nn.Module) -> List[nn.Module]:
    """What callers call: the model itself, or the sub-networks it names in ``inference_stages``."""
    return [getattr(model, name) for name in getattr(model, "inference_stages", ())] or [model]


def _floating(output, dtype: torch.dtype):
    if isinstance(output, torch.Tensor):
        return output.to(dtype) if output.is_floating_point() else output
    return [_floating(o, dtype) for o in output]


def to_bfloat16(model: nn.Module) -> nn.Module:
    """Weights in bfloat16, in place; each entry (:func:`_entries`) casts floating inputs to bfloat16 and returns
    float32, so callers (sliding-window blending, softmax) see float32 as before."""
    model.to(torch.bfloat16)
    for entry in _entries(model):
        entry.register_forward_pre_hook(lambda module, args: tuple(_floating(a, torch.bfloat16) for a in args))
        entry.register_forward_hook(lambda module, args, output: _floating(output, torch.float32))
    return model


def optimize_for_inference(
    model: nn.Module,
    channels_last: bool = True,
    fold_bn: bool = True,
    fuse: bool = True,
    inplace: bool = False,
    split_concat: bool = True,
    fold_upsampling: bool = True,
    bf16: bool = False,
) -> nn.Module:
    """An eval-mode copy of ``model`` (the model itself with ``inplace=True``) for CPU inference: BatchNorm folded,
    channels-last oneDNN convs with fused activations and residuals, nnU-Net decoders without concatenation. Same
    outputs up to float32 rounding, unless ``bf16`` (bfloat16 weights and activations, float32 in and out: faster on
    CPUs with native bf16 instructions, :func:`native_bf16`; not exact). Eager only (the swapped modules call oneDNN
    ops directly); export the original network for TorchScript."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if fold_bn:
        fold_batch_norms(model)
    if split_concat:
        _without_concatenation(model, fold_upsampling)
    if channels_last:
        dims = next((m.weight.dim() - 2 for m in model.modules() if isinstance(m, _ConvNd)), 3)
        to_channels_last(model, dims, fuse)
    if bf16:
        to_bfloat16(model)
    return model
