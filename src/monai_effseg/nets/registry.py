"""Named network configurations (what ``effseg profile NAME`` and the benchmarks build)."""

from __future__ import annotations

from torch import nn

from monai_effseg.registry import Registry

NETS = Registry("network")
register_net = NETS.register


def build_net(name: str, **overrides) -> nn.Module:
    """Build a registered configuration, e.g. ``build_net("nnunet", out_channels=3)``."""
    return NETS.get(name)(**overrides)
