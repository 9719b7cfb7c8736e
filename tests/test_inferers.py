"""Sliding-window inference with mirror TTA."""

from __future__ import annotations

import torch

from monai_effseg.inferers import MirroredPredictor, SlidingWindowMirrorInferer, mirror_combinations


def test_mirror_combinations_are_all_subsets():
    assert mirror_combinations((0, 1, 2)) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def test_mirrored_predictor_averages_flipped_predictions():
    calls = []

    def net(x):
        calls.append(x)
        return x * 1.0

    x = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(1, 1, 2, 3, 4)
    out = MirroredPredictor(net, (0, 1, 2))(x)
    # an equivariant "network" gives back its input after un-flipping
    torch.testing.assert_close(out, x)
    assert len(calls) == 8 and not torch.equal(calls[1], x)


def test_mirror_tta_breaks_a_position_dependent_network_symmetrically():
    def ramp(x):  # depends on position along the last axis
        return torch.linspace(0, 1, x.shape[-1]).expand_as(x).clone()

    x = torch.zeros(1, 1, 4, 4, 8)
    plain = SlidingWindowMirrorInferer(roi_size=(4, 4, 8), mode="constant")(x, ramp)
    tta = SlidingWindowMirrorInferer(roi_size=(4, 4, 8), mode="constant", mirror_axes=(2,))(x, ramp)
    torch.testing.assert_close(plain[0, 0, 0, 0], torch.linspace(0, 1, 8))
    torch.testing.assert_close(tta, torch.full_like(tta, 0.5))
