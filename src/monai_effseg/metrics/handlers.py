"""Ignite handlers wrapping :class:`KiTSMetric` / :class:`LiTSMetric` for bundle ``key_val_metric`` use.

MONAI's ``IgniteMetricHandler.compute`` returns whatever ``aggregate()`` returns, and ignite needs a number for a
key metric (best-model selection, checkpointing), so ``compute`` returns ``aggregate()["mean"]`` here. The other
aggregates are written to ``engine.state.metrics`` as ``f"{name}_{key}"`` (so ``StatsHandler`` and
``TensorBoardStatsHandler`` log them with no extra config); ``engine.state.metric_details[name]`` holds the per-case
buffer (cases x columns) as for MONAI's own handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

from monai_effseg.metrics.cumulative import KiTSMetric, LiTSMetric

__all__ = ["KiTSDiceHandler", "LiTSDiceHandler"]


class _DictMetricHandler(IgniteMetricHandler):
    """Key-metric handler for a metric whose ``aggregate()`` returns a dict with a ``"mean"`` entry."""

    def compute(self) -> float:
        result: dict[str, float] = self.metric_fn.aggregate()  # type: ignore[assignment]
        self._is_reduced = True
        if self._engine is not None and self._name is not None:
            for key, value in result.items():
                if key != "mean":
                    self._engine.state.metrics[f"{self._name}_{key}"] = value
            if self.save_details:
                # (cases, columns) like MONAI's handlers, so MetricsSaver can write it; columns = metric_fn.keys
                self._engine.state.metric_details[self._name] = self.metric_fn.get_buffer()  # type: ignore
        elif self.save_details:
            raise RuntimeError("please call the attach() function to connect expected engine first.")
        return float(result["mean"])


class KiTSDiceHandler(_DictMetricHandler):
    """Mean KiTS region Dice as an ignite metric (e.g. ``key_val_metric`` of a bundle's validation evaluator).

    Args:
        protocol: "kits19" or "kits21".
        include_surface_dice: also accumulate surface Dice (logged, not part of the key value).
        spacing: voxel size in mm for the surface Dice (else taken from MetaTensor labels).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, as for MONAI's ``MeanDice``
            (typically ``monai.handlers.from_engine(["pred", "label"])``).
        save_details: keep the per-case buffer in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        protocol: str = "kits19",
        include_surface_dice: bool = False,
        spacing: Sequence[float] | None = None,
        output_transform: Callable[[Any], Any] = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric: CumulativeIterationMetric = KiTSMetric(protocol, include_surface_dice, spacing)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class LiTSDiceHandler(_DictMetricHandler):
    """Mean of the per-case liver and tumour Dice as an ignite metric; global Dice values are logged too."""

    def __init__(self, output_transform: Callable[[Any], Any] = lambda x: x, save_details: bool = True) -> None:
        super().__init__(metric_fn=LiTSMetric(), output_transform=output_transform, save_details=save_details)
