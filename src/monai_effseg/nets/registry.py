"""Named network configurations (what ``effseg profile NAME`` and the benchmarks build).

Each entry also records the input it is profiled at (channels + spatial size, no batch), which is the source paper's
input: 1x128^3 for Martinho's Table 1 (EfficientNet U-Nets), 9x256x256 for Tustumi's 2.5D networks, and so on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from monai_effseg.registry import Registry

NETS = Registry("network")
PROFILE_INPUTS: dict[str, tuple[int, ...]] = {}


def register_net(name: str, profile_input: Sequence[int] = (1, 128, 128, 128)) -> Callable:
    """Register a network builder under ``name``; ``profile_input`` is (C, *spatial) without the batch."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        NETS.add(name, builder)
        PROFILE_INPUTS[name] = tuple(profile_input)
        return builder

    return deco


def build_net(name: str, **overrides) -> nn.Module:
    """Build a registered configuration, e.g. ``build_net("nnunet", out_channels=3)``."""
    return NETS.get(name)(**overrides)
