"""Saving and reloading a pruned network at its pruned size.

The widths travel inside the state dict: :func:`make_prunable` registers an int64 buffer ``sauron_widths`` (one
entry per prunable layer, in :attr:`ChannelGraph.layers` order) and a ``load_state_dict`` pre-hook that resizes the
network to the incoming weights before they are copied. So ``models/model.pt`` stays a flat state dict of tensors
(``torch.load(weights_only=True)``; MONAI's ``CheckpointLoader(load_dict={"model": net})``, ``ckpt_export`` and MONAI
Label's ``load_state_dict`` all work unchanged), and a bundle's ``network_def`` is simply the full-size network built by
a package function: loading a pruned checkpoint shrinks it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Optional, Union

import torch
from torch import nn

from monai_effseg.pruning.graph import ChannelGraph
from monai_effseg.pruning.surgery import WIDTHS_KEY, resize_channels

__all__ = ["WIDTHS_KEY", "make_prunable", "stored_widths", "widths_from_state_dict"]


def make_prunable(network: nn.Module, graph: Optional[ChannelGraph] = None) -> nn.Module:
    """Give ``network`` a ``sauron_widths`` buffer and let ``load_state_dict`` resize it to a pruned checkpoint.

    Returns the same network (convenient in a bundle's ``network_def``).
    """
    if hasattr(network, WIDTHS_KEY):
        return network
    graph = graph if graph is not None else ChannelGraph.trace(network)
    network.register_buffer(WIDTHS_KEY, torch.tensor(list(graph.widths(network).values()), dtype=torch.long))
    network.register_load_state_dict_pre_hook(_ResizeBeforeLoad(graph))
    return network


def widths_from_state_dict(
    graph: ChannelGraph, state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, int]:
    """Per-layer widths read from the weight shapes of ``state_dict`` (layers whose weight is absent are left out)."""
    widths = {}
    for name, layer in graph.layers.items():
        key = f"{prefix}{name}.weight" if layer.transposed else f"{prefix}{name}.conv.weight"
        if key in state_dict:
            widths[name] = int(state_dict[key].shape[1 if layer.transposed else 0])
    return widths


def stored_widths(
    checkpoint: Union[str, os.PathLike, Mapping[str, torch.Tensor]], key: str = ""
) -> Optional[list[int]]:
    """The ``sauron_widths`` of a checkpoint file or state dict (``key``: the model's entry in a nested checkpoint)."""
    if not isinstance(checkpoint, Mapping):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = checkpoint[key] if key else checkpoint
    widths = state.get(WIDTHS_KEY)
    return None if widths is None else [int(w) for w in widths]


class _ResizeBeforeLoad:
    """``load_state_dict`` pre-hook: resize to the incoming weights' widths, check them against the stored ones."""

    def __init__(self, graph: ChannelGraph) -> None:
        self.graph = graph

    def __call__(self, module: nn.Module, state_dict, prefix: str, *args) -> None:
        widths = widths_from_state_dict(self.graph, state_dict, prefix)
        stored = state_dict.get(prefix + WIDTHS_KEY)
        if stored is not None:
            expected = dict(zip(self.graph.layers, (int(w) for w in stored)))
            if len(expected) != len(self.graph.layers):
                raise ValueError(
                    f"{WIDTHS_KEY} has {stored.numel()} entries but the network has {len(self.graph.layers)} prunable "
                    "layers: the checkpoint belongs to another architecture"
                )
            wrong = {n: (w, expected[n]) for n, w in widths.items() if w != expected[n]}
            if wrong:
                raise ValueError(f"weights and {WIDTHS_KEY} disagree (weight width, stored width): {wrong}")
            widths = expected
        resize_channels(module, self.graph, widths)
        if stored is None:  # a checkpoint of the same net saved without the buffer (e.g. an unpruned baseline)
            state_dict[prefix + WIDTHS_KEY] = getattr(module, WIDTHS_KEY).clone()
