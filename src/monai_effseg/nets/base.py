"""Encoder + decoder composition: the base class of :class:`~monai_effseg.nets.PlainUNet` (and so of its presets
``ResidualUNet``, ``MSSUNet`` and ``SauronUNet``) and of ``EfficientUNet``. ``LiteUNet`` (its decoder needs the input
shortcut) and the two-stage ``UNetCascade`` and ``LiverTumourUNet`` are wired on their own."""

from __future__ import annotations

from typing import List, Union

import torch
from torch import nn


class EncoderDecoderNet(nn.Module):
    """``decoder(encoder(x))``. Keeps ``encoder`` and ``decoder`` as attributes so profiling and pruning can treat
    the parts separately. In ``train()`` mode with deep supervision the output is a list of logits (highest
    resolution first, as MONAI's ``DeepSupervisionLoss`` expects); otherwise one tensor."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        return self.decoder(self.encoder(x))
