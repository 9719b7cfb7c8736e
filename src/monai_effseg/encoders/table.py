"""An encoder built from a stage table: the single builder that every table-driven encoder uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_effseg.blocks import StageSpec, build_stage
from monai_effseg.blocks.layers import NNUNET_ACT, NNUNET_NORM, LayerSpec


class TableEncoder(nn.Module):
    """Stages built row by row; the outputs of the stages in ``feature_stages`` are the skip features.

    Args:
        spatial_dims: 2 or 3.
        stages: the table; row ``i`` consumes row ``i-1``'s output (the first row's ``in_channels`` is the image's).
        feature_stages: indices of the rows whose outputs are returned, in increasing order. Defaults to every row.
        norm, act: MONAI layer specs passed to every block (a row's ``extra`` can override them).
        block_kwargs: extra options for every block (e.g. ``bias=False``).
    """

    def __init__(
        self,
        spatial_dims: int,
        stages: Sequence[StageSpec],
        feature_stages: Sequence[int] | None = None,
        norm: LayerSpec = NNUNET_NORM,
        act: LayerSpec = NNUNET_ACT,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        for prev, row in zip(stages, stages[1:]):
            if row.in_channels != prev.out_channels:
                raise ValueError(f"stage table is not chained: {prev.out_channels} channels out, then {row}")
        self.spatial_dims = spatial_dims
        self.table = list(stages)
        self.stages = nn.ModuleList(build_stage(row, spatial_dims, norm, act, **block_kwargs) for row in stages)
        self.feature_stages = list(range(len(stages)) if feature_stages is None else feature_stages)
        if sorted(set(self.feature_stages)) != self.feature_stages or self.feature_stages[-1] != len(stages) - 1:
            raise ValueError(f"feature_stages must increase and end at the last stage, got {self.feature_stages}")
        self.out_channels = [stages[i].out_channels for i in self.feature_stages]
        self.strides = self._feature_strides()

    def _feature_strides(self) -> list[tuple[int, ...]]:
        strides, current, start = [], [1] * self.spatial_dims, 0
        for end in self.feature_stages:
            for row in self.table[start : end + 1]:
                current = [c * s for c, s in zip(current, ensure_tuple_rep(row.stride, self.spatial_dims))]
            strides.append(tuple(current))
            current, start = [1] * self.spatial_dims, end + 1
        return strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.stage_features(x)

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the ``feature_stages``. Subclasses call this instead of ``super().forward``, which
        TorchScript cannot compile."""
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.feature_stages:
                features.append(x)
        return features
