"""The channel graph of a network: which layers' output channels can be removed, and which modules read them.

Sauron (Valverde, Shatillo, Tohka, Neurocomputing 594:127817, 2024) prunes the filters of every conv block and of
every transposed conv; removing a filter removes the matching input channels of every consumer, skip concatenations
included (``tests/data/reference/methods.md`` section 1.3). The graph is found by tracing the network with
``torch.fx``, so any network built from the block library can be pruned, not only one hand-wired U-Net.

Rules (conservative: a layer is prunable only when every path from its output is understood):

- producers: :class:`~monai_effseg.blocks.ConvNormAct` blocks (observed after conv -> norm -> act) and transposed
  convs, both ungrouped. Plain convs (e.g. segmentation heads) only consume.
- channel-wise modules and functions (norms, activations, dropout, pooling, upsampling) pass channels through;
  ``torch.cat`` along dim 1 concatenates them.
- anything else (a residual ``+``, channel indexing, a grouped consumer, the network output) pins the channels
  that reach it: their producers are not pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from monai_effseg.blocks import ConvNormAct

__all__ = ["ChannelGraph", "PrunableLayer", "Segment", "layer_module_width"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_CHANNELWISE_MODULES = _NORMS + (
    nn.Identity, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.ReLU6, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.Upsample,
)  # fmt: skip
_CHANNELWISE_FUNCTIONS = {
    F.relu, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.dropout, F.interpolate, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.relu, torch.sigmoid, torch.tanh,
}  # fmt: skip
_CHANNELWISE_METHODS = {"contiguous", "clone", "float", "half", "to", "relu", "sigmoid", "tanh"}
_CAT = {torch.cat, torch.concat}


@dataclass(frozen=True)
class Segment:
    """A run of consecutive channels of a tensor: the outputs of prunable layer ``source``, or ``width`` channels
    that never change (``source is None``: the image, a head, a pinned layer)."""

    source: Optional[str]
    width: int


@dataclass(frozen=True)
class PrunableLayer:
    """A layer whose output filters Sauron removes. ``transposed``: a transposed conv (filters are ``weight[:, c]``);
    otherwise a conv block (filters are ``conv.weight[c]``, plus the block norm's per-channel entries)."""

    name: str
    transposed: bool


def layer_module_width(module: nn.Module) -> int:
    """The current number of output channels of a producer module."""
    if isinstance(module, ConvNormAct):
        return module.conv.weight.shape[0]
    return module.weight.shape[1] * module.groups


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, ConvNormAct) or super().is_leaf_module(m, module_qualified_name)


def _is_producer(module: nn.Module) -> bool:
    if isinstance(module, ConvNormAct):
        act_params = sum(p.numel() for p in module.act.parameters())
        norm_ok = isinstance(module.norm, _NORMS + (nn.Identity,))
        return module.conv.groups == 1 and norm_ok and act_params <= 1
    return isinstance(module, _TRANSPOSED) and module.groups == 1


def _has_channel_state(module: nn.Module) -> bool:
    return any(
        t is not None and t.dim() == 1 for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))
    )


class ChannelGraph:
    """Producers (prunable layers), consumers with their input layout, and channel-wise followers of a network.

    Attributes:
        layers: prunable layers in forward order (the order of the stored widths).
        consumers: module name -> input layout (tuple of :class:`Segment`, in channel order) for every conv, conv
            block or transposed conv that reads a prunable layer.
        followers: module name -> input layout for channel-wise modules with per-channel parameters or buffers
            (a norm between a producer and its consumer) that must be sliced with the producer.
        output_layers: modules whose output is a network output (deep-supervision heads); Sauron's code gives each
            of them a constant 1 in the regulariser's average (``Sauron.py:178-186``).
    """

    def __init__(
        self,
        layers: Iterable[PrunableLayer],
        consumers: dict[str, tuple[Segment, ...]],
        followers: dict[str, tuple[Segment, ...]],
        output_layers: Iterable[str],
    ) -> None:
        self.layers = {layer.name: layer for layer in layers}
        self.consumers = consumers
        self.followers = followers
        self.output_layers = tuple(output_layers)

    @classmethod
    def trace(cls, network: nn.Module) -> ChannelGraph:
        """Trace ``network`` (in training mode, so deep-supervision heads are part of the graph)."""
        modes = {m: m.training for m in network.modules()}
        network.train()
        try:
            graph = _Tracer().trace(network)
        except Exception as e:  # fx cannot trace data-dependent control flow
            raise ValueError(f"cannot trace {type(network).__name__} with torch.fx for pruning: {e}") from e
        finally:
            for m, mode in modes.items():
                m.training = mode
        return _Propagation(network, graph).result()

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"ChannelGraph({len(self.layers)} prunable layers, {len(self.consumers)} consumers)"

    def module(self, network: nn.Module, name: str) -> nn.Module:
        return network.get_submodule(name)

    def widths(self, network: nn.Module) -> dict[str, int]:
        """Current output width of every prunable layer."""
        return {name: layer_module_width(network.get_submodule(name)) for name in self.layers}


Layout = tuple  # tuple[Segment, ...]; None width means "not known yet"


class _Propagation:
    """Walks the fx graph once, tracking which producer each channel of every tensor comes from."""

    def __init__(self, network: nn.Module, graph: fx.Graph) -> None:
        self.network = network
        self.graph = graph
        self.env: dict[fx.Node, Layout] = {}
        self.candidates: list[PrunableLayer] = []
        self.pinned: set[str] = set()
        self.consumers: dict[str, Layout] = {}
        self.followers: dict[str, Layout] = {}
        self.output_layers: list[str] = []
        for node in graph.nodes:
            self.env[node] = self._visit(node)

    def _pin(self, args: Any) -> Layout:
        """An op we do not model: every producer reaching it keeps all of its channels."""
        for node in _nodes_in(args):
            self.pinned.update(s.source for s in self.env[node] if s.source is not None)
        return (Segment(None, -1),)

    def _visit(self, node: fx.Node) -> Layout:
        if node.op == "placeholder" or node.op == "get_attr":
            return (Segment(None, -1),)
        if node.op == "output":
            for arg in _nodes_in(node.args):
                if arg.op == "call_module":
                    self.output_layers.append(str(arg.target))
            self._pin(node.args)
            return ()
        if node.op == "call_module":
            return self._visit_module(node, self.network.get_submodule(str(node.target)))
        if node.op == "call_function":
            if node.target in _CAT:
                tensors = node.args[0] if node.args else node.kwargs["tensors"]
                dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
                if dim == 1 and all(isinstance(t, fx.Node) for t in tensors):
                    return tuple(s for t in tensors for s in self.env[t])
            elif node.target in _CHANNELWISE_FUNCTIONS and isinstance(node.args[0], fx.Node):
                return self.env[node.args[0]]
        if node.op == "call_method" and node.target in _CHANNELWISE_METHODS:
            return self.env[node.args[0]]
        return self._pin((node.args, node.kwargs))

    def _visit_module(self, node: fx.Node, module: nn.Module) -> Layout:
        name = str(node.target)
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return self._pin((node.args, node.kwargs))
        layout = self.env[node.args[0]]
        if isinstance(module, ConvNormAct) or isinstance(module, _CONVS + _TRANSPOSED):
            conv = module.conv if isinstance(module, ConvNormAct) else module
            self._consume(name, conv, layout)
            if _is_producer(module):
                self.candidates.append(PrunableLayer(name, isinstance(module, _TRANSPOSED)))
                return (Segment(name, layer_module_width(module)),)
            return (
                Segment(None, layer_module_width(module) if isinstance(module, ConvNormAct) else conv.out_channels),
            )
        if isinstance(module, _CHANNELWISE_MODULES):
            if _has_channel_state(module) and any(s.source is not None for s in layout):
                if any(s.width < 0 for s in layout):  # cannot locate the producer's channels
                    self._pin_layout(layout)
                else:
                    self.followers[name] = layout
            return layout
        return self._pin(node.args)

    def _consume(self, name: str, conv: nn.Module, layout: Layout) -> None:
        if not any(s.source is not None for s in layout):
            return
        unknown = [i for i, s in enumerate(layout) if s.source is None and s.width < 0]
        if conv.groups != 1 or len(unknown) > 1:
            self._pin_layout(layout)
            return
        if unknown:  # the one run of unknown width (e.g. the image) is what the others leave of in_channels
            known = sum(s.width for s in layout if s.width >= 0)
            layout = tuple(Segment(None, conv.in_channels - known) if i in unknown else s for i, s in enumerate(layout))
        self.consumers[name] = layout

    def _pin_layout(self, layout: Layout) -> None:
        self.pinned.update(s.source for s in layout if s.source is not None)

    def result(self) -> ChannelGraph:
        layers = [layer for layer in self.candidates if layer.name not in self.pinned]
        prunable = {layer.name for layer in layers}

        def settle(layout: Layout) -> tuple[Segment, ...]:
            return tuple(s if s.source in prunable else Segment(None, s.width) for s in layout)

        consumers = {n: settle(lay) for n, lay in self.consumers.items() if any(s.source in prunable for s in lay)}
        followers = {n: settle(lay) for n, lay in self.followers.items() if any(s.source in prunable for s in lay)}
        return ChannelGraph(layers, consumers, followers, self.output_layers)


def _nodes_in(args: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(args, found.append)
    return found
