"""Physical removal of filters: producers lose output channels, consumers the matching input channels.

Valverde et al. (Sauron, Neurocomputing 2024) physically drop pruned filters during training, together with the
input channels of dependent layers and the Adam state of every touched parameter (authors' ``lib/callback.py:412-563``).
Here the consumers come from :class:`~monai_effseg.pruning.graph.ChannelGraph`, so skip concatenations (our decoder
order is ``[upsampled, skip]``), the next conv of a stage, transposed convs (``weight[keep]`` on their inputs) and
deep-supervision heads are all handled by the same code.

Parameters are replaced by new ``nn.Parameter`` objects rather than resized in place: an autograd graph still alive
(the trainer's last ``loss`` in ``engine.state.output``, a DDP reducer) holds gradient accumulators that remember the
old shapes. Every optimizer passed in (or registered with :func:`track_optimizer`) gets the new parameter in the old
one's place and its state (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``) sliced the
same way.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Callable, Union

import torch
from torch import nn

from monai_effseg.blocks import ConvNormAct
from monai_effseg.pruning.graph import ChannelGraph, Segment

__all__ = ["WIDTHS_KEY", "prune_channels", "resize_channels", "track_optimizer", "tracked_optimizers"]

WIDTHS_KEY = "sauron_widths"
"""Name of the int64 buffer holding every prunable layer's width, in :attr:`ChannelGraph.layers` order."""

_NORM_STATE = ("weight", "bias", "running_mean", "running_var")
_TRACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

Indices = Union[Sequence[int], torch.Tensor]


class _Selection:
    """Which old channels survive (``old``), where they land (``new``), and the new width (``size``).

    Pruning keeps ``old`` at positions ``0..len(old)-1``; resizing to a larger width leaves zero channels after them.
    """

    def __init__(self, old: torch.Tensor, new: torch.Tensor, size: int) -> None:
        self.old, self.new, self.size = old, new, size

    def apply(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(t.shape)
        shape[dim] = self.size
        out = t.new_zeros(shape)
        return out.index_copy_(dim, self.new.to(t.device), t.index_select(dim, self.old.to(t.device)))

    def is_identity(self, width: int) -> bool:
        return self.size == width == len(self.old) and bool((self.old == torch.arange(width)).all())


def track_optimizer(network: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Register ``optimizer`` so that any later surgery on ``network`` (including the resize that loading a pruned
    state dict triggers) updates its parameter list and state. Holds weak references only."""
    _TRACKED.setdefault(network, weakref.WeakSet()).add(optimizer)


def tracked_optimizers(network: nn.Module) -> list[torch.optim.Optimizer]:
    return list(_TRACKED.get(network, ()))


def prune_channels(
    network: nn.Module,
    graph: ChannelGraph,
    keep: Mapping[str, Indices],
    optimizers: Iterable[torch.optim.Optimizer] = (),
) -> dict[str, int]:
    """Keep only the channels ``keep[layer]`` (old indices, in any order; stored sorted) of each named layer.

    Layers not in ``keep`` are untouched. Returns the new widths of every prunable layer.
    """
    selections = {}
    for name, indices in keep.items():
        if name not in graph.layers:
            raise KeyError(f"{name!r} is not a prunable layer of this network")
        old = torch.as_tensor(indices, dtype=torch.long).unique(sorted=True)
        if len(old) == 0:
            raise ValueError(f"pruning would remove every channel of {name!r}")
        selections[name] = _Selection(old, torch.arange(len(old)), len(old))
    return _apply(network, graph, selections, optimizers)


def resize_channels(
    network: nn.Module, graph: ChannelGraph, widths: Mapping[str, int], optimizers: Iterable[torch.optim.Optimizer] = ()
) -> dict[str, int]:
    """Give each named layer ``widths[layer]`` channels: the first ones are kept, new ones are zero.

    This is how a network built at full width takes the shape of a pruned checkpoint before its weights are loaded.
    """
    current = graph.widths(network)
    selections = {}
    for name, width in widths.items():
        if int(width) < 1:
            raise ValueError(f"width of {name!r} must be >= 1, got {width}")
        kept = torch.arange(min(current[name], int(width)))
        selections[name] = _Selection(kept, kept, int(width))
    return _apply(network, graph, selections, optimizers)


@torch.no_grad()
def _apply(
    network: nn.Module,
    graph: ChannelGraph,
    selections: dict[str, _Selection],
    optimizers: Iterable[torch.optim.Optimizer],
) -> dict[str, int]:
    old_widths = graph.widths(network)
    selections = {n: s for n, s in selections.items() if not s.is_identity(old_widths[n])}
    if not selections:
        return old_widths
    swap = _swapper([*optimizers, *tracked_optimizers(network)])
    for name, sel in selections.items():
        module = network.get_submodule(name)
        if graph.layers[name].transposed:
            swap(module, "weight", 1, sel)
            swap(module, "bias", 0, sel)
            module.out_channels = sel.size
        else:
            swap(module.conv, "weight", 0, sel)
            swap(module.conv, "bias", 0, sel)
            module.conv.out_channels = sel.size
            _slice_norm(module.norm, sel, swap)
    for name, layout in graph.consumers.items():
        if not any(s.source in selections for s in layout):
            continue
        module = network.get_submodule(name)
        conv = module.conv if isinstance(module, ConvNormAct) else module
        sel = _layout_selection(layout, selections, old_widths)
        if len(sel.old) and int(sel.old.max()) >= conv.in_channels:
            raise RuntimeError(f"{name}: input layout {layout} does not fit its {conv.in_channels} input channels")
        transposed = isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        swap(conv, "weight", 0 if transposed else 1, sel)
        conv.in_channels = sel.size
    for name, layout in graph.followers.items():
        if any(s.source in selections for s in layout):
            _slice_norm(network.get_submodule(name), _layout_selection(layout, selections, old_widths), swap)
    new_widths = graph.widths(network)
    stored = getattr(network, WIDTHS_KEY, None)
    if isinstance(stored, torch.Tensor) and stored.numel() == len(new_widths):
        stored.copy_(torch.tensor(list(new_widths.values()), dtype=stored.dtype))
    return new_widths


def _slice_norm(norm: nn.Module, sel: _Selection, swap: Callable) -> None:
    for attr in _NORM_STATE:
        swap(norm, attr, 0, sel)
    if hasattr(norm, "num_features"):
        norm.num_features = sel.size


def _layout_selection(
    layout: Sequence[Segment], selections: dict[str, _Selection], widths: dict[str, int]
) -> _Selection:
    """The selection over a concatenated input: every segment's own selection, shifted by its offset."""
    old, new = [], []
    old_offset = new_offset = 0
    for seg in layout:
        width = widths[seg.source] if seg.source is not None else seg.width
        sel = selections.get(seg.source) if seg.source is not None else None
        if sel is None:
            sel = _Selection(torch.arange(width), torch.arange(width), width)
        old.append(sel.old + old_offset)
        new.append(sel.new + new_offset)
        old_offset += width
        new_offset += sel.size
    return _Selection(torch.cat(old), torch.cat(new), new_offset)


def _swapper(optimizers: list[torch.optim.Optimizer]) -> Callable[[nn.Module, str, int, _Selection], None]:
    unique = list({id(o): o for o in optimizers}.values())

    def swap(module: nn.Module, attr: str, dim: int, sel: _Selection) -> None:
        old = getattr(module, attr, None)
        if not isinstance(old, torch.Tensor) or old.dim() <= dim:
            return
        if not isinstance(old, nn.Parameter):
            module._buffers[attr] = sel.apply(old, dim)
            return
        new = nn.Parameter(sel.apply(old.detach(), dim), requires_grad=old.requires_grad)
        if old.grad is not None:
            new.grad = sel.apply(old.grad, dim)
        module._parameters[attr] = new
        for optimizer in unique:
            _swap_in_optimizer(optimizer, old, new, lambda t: sel.apply(t, dim))

    return swap


def _swap_in_optimizer(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter, slice_fn) -> None:
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    if old in optimizer.state:
        state = optimizer.state.pop(old)
        optimizer.state[new] = {
            k: slice_fn(v) if isinstance(v, torch.Tensor) and v.shape == old.shape else v for k, v in state.items()
        }
