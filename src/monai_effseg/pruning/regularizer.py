"""Sauron's regulariser and its per-epoch pruning statistics, collected by forward hooks.

Valverde, Shatillo, Tohka, "Sauron U-Net: Simple automated redundancy elimination in medical image segmentation via
filter pruning", Neurocomputing 594:127817 (2024): the loss is ``L_seg + lambda * mean_layers(mean(delta_opt))``
with ``lambda = 0.5`` (authors' ``lib/loss.py:101-128``). A forward hook on every prunable layer of the
:class:`~monai_effseg.pruning.graph.ChannelGraph` (after conv -> norm -> act for a block, the output of a transposed
conv) computes the layer's term during training forwards, and :class:`SauronLoss` adds them to the segmentation loss.
The same hooks accumulate the pruning criterion ``delta_prune`` over the epoch for :class:`SauronPruner`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_effseg.pruning.distances import check_normalisation, delta_opt, delta_prune
from monai_effseg.pruning.graph import ChannelGraph

__all__ = ["SauronLoss", "SauronRegularizer"]


class SauronRegularizer:
    """Forward hooks on every prunable layer of ``network``.

    Args:
        network: the (unwrapped) network; its prunable layers are found by :meth:`ChannelGraph.trace`.
        lam: weight of the regulariser (the paper's lambda, 0.5). 0 disables the term but keeps the statistics.
        pool: average-pooling factor of both distances (2).
        per_slice: normalise per 2D slice along ``slice_axis``, as the authors' code does on 3D data (see
            :func:`~monai_effseg.pruning.distances.delta_opt`). Default ``False``: each whole map, as the paper
            describes and as their code does in 2D; per-slice ranges also blow up on nearly constant (padded) slices.
        slice_axis: spatial axis of the slices with ``per_slice``. Default 0: x in MONAI's RAS (x, y, z) layout,
            the axis the authors' code slices along (the last axis of their (z, y, x) arrays: sagittal slices).
        head_dilution: also count a constant 1 per network output layer (deep-supervision head) in the average, as
            the authors' code does (22 layers + 3 heads: an effective weight of 0.5 x 22/25 per layer). Default
            ``False``: the mean over the pruned layers, the paper's formula.
        normalisation: of each map in ``delta_opt``: ``"minmax"`` (the authors') or ``"zscore"`` (opt-in; see
            :func:`~monai_effseg.pruning.distances.delta_opt`).
        graph: a graph already traced from ``network``.
    """

    def __init__(
        self,
        network: nn.Module,
        lam: float = 0.5,
        pool: int = 2,
        per_slice: bool = False,
        head_dilution: bool = False,
        normalisation: str = "minmax",
        graph: Optional[ChannelGraph] = None,
        slice_axis: int = 0,
    ) -> None:
        self.network = network
        self.graph = graph if graph is not None else ChannelGraph.trace(network)
        if not len(self.graph):
            raise ValueError(f"{type(network).__name__} has no prunable layer")
        self.lam = float(lam)
        self.pool = pool
        self.per_slice = per_slice
        self.slice_axis = slice_axis
        self.normalisation = normalisation
        check_normalisation(normalisation, per_slice)  # fail here, not at the first training forward
        self.constant_terms = len(self.graph.output_layers) if head_dilution else 0
        self.terms: list[torch.Tensor] = []
        # pruning statistics: reference channel per layer, running sums of delta_prune, last batch's values
        self.references: dict[str, int] = {}
        self.keep_last_only = False
        self.generator: Optional[torch.Generator] = None
        self.record_eval = False
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.handles = [network.register_forward_pre_hook(self._clear)]
        for name in self.graph.layers:
            self.handles.append(network.get_submodule(name).register_forward_hook(self._hook(name)))

    def _clear(self, module: nn.Module, args) -> None:
        self.terms = []  # a forward whose loss was never computed (e.g. a plain eval with grads) leaves nothing behind

    def _hook(self, name: str):
        def hook(module: nn.Module, args, output: torch.Tensor) -> None:
            if module.training:
                if self.lam > 0 and torch.is_grad_enabled():
                    self.terms.append(
                        delta_opt(output, self.pool, self.per_slice, normalisation=self.normalisation,
                                  slice_axis=self.slice_axis).mean()
                    )  # fmt: skip
            elif not self.record_eval:
                return
            if name in self.references:
                self._accumulate(name, output)

        return hook

    def _accumulate(self, name: str, output: torch.Tensor) -> None:
        if self.generator is not None:  # a new reference for every forward (the authors' ``Euclidean_rand``)
            self.references[name] = int(torch.randint(output.shape[1], (), generator=self.generator))
        d = delta_prune(output, self.references[name], self.pool)
        if self.keep_last_only or name not in self.sums:
            self.sums[name], self.counts[name] = d.sum(dim=0), d.shape[0]
        else:
            self.sums[name] += d.sum(dim=0)
            self.counts[name] += d.shape[0]

    def penalty(self) -> torch.Tensor:
        """``lam`` x the mean of the layer terms of the last training forward (consumed by this call)."""
        terms, self.terms = self.terms, []
        if not terms or self.lam == 0:
            return torch.zeros(())
        total = torch.stack(terms).sum() + self.constant_terms
        return self.lam * total / (len(terms) + self.constant_terms)

    def start_epoch(
        self,
        references: Mapping[str, int],
        keep_last_only: bool = False,
        generator: Optional[torch.Generator] = None,
        record_eval: bool = False,
    ) -> None:
        """Start collecting ``delta_prune`` against ``references`` (one channel per layer).

        Args:
            references: the layers to collect, and their reference channels.
            keep_last_only: keep only the last forward's distances (instead of summing over the epoch).
            generator: draw a new reference channel for every forward from it (the authors' criterion); the last
                draw per layer is left in :attr:`references`.
            record_eval: also collect in eval-mode forwards (validation), not only training ones.
        """
        self.references = dict(references)
        self.keep_last_only = keep_last_only
        self.generator = generator
        self.record_eval = record_eval
        self.sums, self.counts = {}, {}

    def record_validation(self, enabled: bool = True) -> None:
        """Collect (``True``) or ignore (``False``) the eval-mode forwards from now on."""
        self.record_eval = enabled

    def stop(self) -> None:
        self.references = {}
        self.generator = None
        self.record_eval = False

    def remove(self) -> None:
        """Detach every hook (e.g. before scripting the network)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []


class SauronLoss(_Loss):
    """``loss(input, target) + regularizer.penalty()``: the segmentation loss plus Sauron's ``lambda * delta_opt``."""

    def __init__(self, loss: nn.Module, regularizer: SauronRegularizer) -> None:
        super().__init__()
        self.loss = loss
        self.regularizer = regularizer

    def forward(self, input, target: torch.Tensor) -> torch.Tensor:
        seg = self.loss(input, target)
        return seg + self.regularizer.penalty().to(seg.device)
