"""PlainUNet = nnU-Net 3d_fullres Generic_UNet: exact parameter counts, FLOPs and outputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from monai_effseg.nets import PlainUNet, build_net
from monai_effseg.profile import count_flops, count_params


def test_kits_configuration_has_nnunet_v1_parameter_count():
    net = build_net("nnunet")
    assert count_params(net) == 31_196_384
    # tests/data/reference/architectures.md section 1: encoder, decoder conv stages, transposed convs, heads
    assert count_params(net.encoder) == 14_025_120
    assert count_params(net.decoder.stages) == 15_349_440
    assert count_params(net.decoder.ups) == 1_818_624
    assert count_params(net.decoder.heads) == 3_200


def test_v2_bias_convention_matches_plainconvunet():
    assert count_params(build_net("nnunet", bias_convention="v2")) == 31_197_204


def test_flops_at_128_cubed_within_1_percent_of_reference():
    # conv MACs scale exactly with the voxel count ("same" padding, sizes divisible by 32), so 64^3 x 8 = 128^3
    flops = count_flops(build_net("nnunet"), (1, 1, 64, 64, 64))
    assert abs(flops["network"] * 8 / 0.955e12 - 1) < 0.01
    assert flops["network"] == flops["encoder"] + flops["decoder"]


def test_deep_supervision_outputs_in_training_single_output_in_eval():
    net = PlainUNet(features=(8, 16, 32, 64), out_channels=3)
    x = torch.randn(2, 1, 32, 32, 32)
    outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16), (2, 3, 8, 8, 8)]
    net.eval()
    assert net(x).shape == (2, 3, 32, 32, 32)


def test_anisotropic_kernels_and_strides():
    net = PlainUNet(features=(8, 16, 32), kernel_sizes=[(3, 3, 1), 3, 3], strides=[1, (2, 2, 1), 2], out_channels=2)
    assert net.encoder.strides == [(1, 1, 1), (2, 2, 1), (2, 2, 2)]
    net.eval()
    assert net(torch.randn(1, 1, 32, 32, 8)).shape == (1, 2, 32, 32, 8)


def test_without_deep_supervision_no_dead_heads():
    with_ds = PlainUNet(features=(8, 16, 32), out_channels=2)
    without = PlainUNet(features=(8, 16, 32), out_channels=2, deep_supervision=False)
    assert len(with_ds.decoder.heads) == 2 and len(without.decoder.heads) == 1
    assert isinstance(without(torch.randn(1, 1, 16, 16, 16)), torch.Tensor)


def test_2d():
    net = PlainUNet(spatial_dims=2, features=(8, 16, 32), out_channels=3).eval()
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_matches_eager_in_both_modes():
    net = PlainUNet(features=(8, 16, 32), out_channels=3)
    x = torch.randn(1, 1, 16, 16, 16)
    scripted = torch.jit.script(net)
    for train in (True, False):
        net.train(train)
        scripted.train(train)
        eager, script = net(x), scripted(x)
        eager = eager if isinstance(eager, list) else [eager]
        script = script if isinstance(script, list) else [script]
        for a, b in zip(eager, script):
            torch.testing.assert_close(a, b)


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="one entry per stage"):
        PlainUNet(features=(8, 16, 32), strides=[1, 2])
    with pytest.raises(ValueError, match="bias_convention"):
        PlainUNet(bias_convention="v3")


def test_registry_is_complete_at_import():
    """Every paper's net is registered by importing the networks package alone (``effseg profile --all`` lists them)."""
    code = "from monai_effseg.nets import NETS; print(sorted(NETS))"
    names = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", errors="replace", check=True
    ).stdout
    for preset in ("nnunet", "residual_unet_kits19", "unet_cascade_kits19", "mss_unet", "sauron_nnunet"):
        assert f"'{preset}'" in names
