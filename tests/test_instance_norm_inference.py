"""The CPU inference forms of InstanceNorm (+ activation) and of the FullyEfficient decoder's MBConv block compute
what the eager modules compute, slab by slab and chunk by chunk, without keeping the expanded tensor whole."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_effseg.blocks.mbconv import MBConv
from monai_effseg.blocks.silu import FULLY_EFFICIENT_NORM
from monai_effseg.deploy import instance_norm as inorm
from monai_effseg.deploy import mbconv as inference_mbconv
from monai_effseg.deploy.instance_norm import ChannelsLastInstanceNorm, instance_norm_act_
from monai_effseg.deploy.mbconv import InstanceNormMBConv
from monai_effseg.deploy.optimize import optimize_for_inference

ACTS = {None: lambda y: y, "silu": F.silu, "relu": F.relu, "leaky_relu": lambda y: F.leaky_relu(y, 0.01)}


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)


def affine_norm(channels: int, dims: int = 3) -> torch.nn.Module:
    norm = (torch.nn.InstanceNorm3d if dims == 3 else torch.nn.InstanceNorm2d)(channels, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


@pytest.mark.parametrize("act", list(ACTS))
def test_instance_norm_act_matches_eager_on_offset_data(act, monkeypatch):
    """A mean 50 times the spread (where a sum-of-squares variance loses digits), small chunks so that the
    statistics are merged across many of them; output and the per-channel means a squeeze-excitation pools."""
    monkeypatch.setattr(inorm, "CHUNK_ELEMENTS", 6 * 37)
    torch.manual_seed(0)
    x = channels_last(torch.randn(1, 6, 5, 7, 9) * 2 + 100)
    norm = affine_norm(6)
    with torch.no_grad():
        expected = ACTS[act](F.instance_norm(x.double(), weight=norm.weight.double(), bias=norm.bias.double()))
        got = x.clone()
        pooled = instance_norm_act_(got, norm.weight, norm.bias, norm.eps, act, (0.01,) if act == "leaky_relu" else (),
                                    channel_means=True)  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(pooled.double(), expected.mean((0, 2, 3, 4)), atol=2e-5, rtol=1e-5)


def test_instance_norm_over_slabs_equals_the_whole_tensor():
    torch.manual_seed(0)
    x = channels_last(torch.randn(1, 4, 12, 6, 5))
    whole, parts = x.clone(), x.clone()
    instance_norm_act_(whole, None, None, 1e-5, "silu")
    slabs = [parts[:, :, 0:5], parts[:, :, 5:6], parts[:, :, 6:12]]
    assert all(inorm.is_channels_last(s) for s in slabs)
    instance_norm_act_(slabs, None, None, 1e-5, "silu")
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=1e-6)


def test_channels_last_instance_norm_writes_in_place_only_when_asked():
    torch.manual_seed(0)
    norm = affine_norm(3, dims=2).eval()
    x = channels_last(torch.randn(2, 3, 8, 8))
    expected = F.leaky_relu(norm(x), 0.01)
    with torch.no_grad():
        kept = x.clone()
        out = ChannelsLastInstanceNorm(norm, torch.nn.LeakyReLU(0.01))(kept)
        assert torch.equal(kept, x)  # the input of a norm that others may read is left alone
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        overwritten = x.clone()
        out = ChannelsLastInstanceNorm(norm, torch.nn.LeakyReLU(0.01), inplace=True)(overwritten)
        assert out.data_ptr() == overwritten.data_ptr()
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="in-place form"):
        ChannelsLastInstanceNorm(norm, torch.nn.GELU())


def fully_efficient_block(dims: int, in_channels: int, out_channels: int, expand: float, se: float) -> MBConv:
    torch.manual_seed(1)
    block = MBConv(dims, in_channels, out_channels, 3, 1, expand, se, norm=FULLY_EFFICIENT_NORM)
    for module in block.modules():
        if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return block.eval()


@pytest.mark.parametrize("dims", [3, 2])
@pytest.mark.parametrize("in_channels,out_channels,expand,se", [(8, 8, 6, 0.25), (8, 4, 6, 0.25), (4, 4, 1, 0.25),
                                                                 (8, 8, 6, 0.0)])  # fmt: skip
@pytest.mark.parametrize("slab_slices", [1, 3, 100], ids=["slab1", "slab3", "whole"])
def test_instance_norm_mbconv_equals_the_block(dims, in_channels, out_channels, expand, se, slab_slices, monkeypatch):
    """Residual or not, with or without expand conv and squeeze-excitation, 2D and 3D, batch 2, the volume cut into
    slabs of 1 or 3 slices (halo at the volume's borders and between slabs) or kept whole."""
    block = fully_efficient_block(dims, in_channels, out_channels, expand, se)
    spatial = (10, 6, 7) if dims == 3 else (10, 9)
    x = torch.randn(2, in_channels, *spatial) + 3
    mid = round(in_channels * expand)
    monkeypatch.setattr(inference_mbconv, "SLAB_ELEMENTS", slab_slices * mid * x[0, 0, 0].numel())
    assert InstanceNormMBConv.supports(block)
    fast = InstanceNormMBConv(block)
    with torch.no_grad():
        expected = block(x)
        got = fast(channels_last(x))
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(fast(x), expected, atol=2e-5, rtol=2e-5)  # an NCDHW input is converted
    torch.testing.assert_close(fast.train()(x), block.train()(x))  # training runs the block itself


def test_expanded_tensor_never_exists_whole(monkeypatch):
    """With slabs of 3 slices, every expand conv output spans at most 3 slices plus the 1-slice halo each side."""
    block = fully_efficient_block(3, 8, 8, 6, 0.25)
    x = channels_last(torch.randn(1, 8, 12, 6, 6))
    monkeypatch.setattr(inference_mbconv, "SLAB_ELEMENTS", 3 * 48 * 36)
    depths = []
    real = inference_mbconv.onednn_conv

    def recording(inputs, weight, *args, **kwargs):
        out = real(inputs, weight, *args, **kwargs)
        if weight.shape[0] == 48 and weight.shape[1] == 8:  # the expand conv
            depths.append(out.shape[2])
        return out

    monkeypatch.setattr(inference_mbconv, "onednn_conv", recording)
    with torch.no_grad():
        torch.testing.assert_close(InstanceNormMBConv(block)(x), block(x), atol=2e-5, rtol=2e-5)
    assert depths == [4, 5, 5, 4]  # 12 slices, each inner slab border recomputed on both sides


def test_optimized_fully_efficient_nets_use_the_inference_block():
    """Every decoder block of FullyEfficientUNet and FullyEffGenericUNet becomes the inference form; outputs kept."""
    from monai_effseg.nets import EfficientUNet, build_net

    torch.manual_seed(0)
    nets = [
        EfficientUNet("efficientnet-b0", "mbconv", out_channels=3, decoder_channels=[8, 8, 16, 16, 16],
                      encoder_kwargs={"width_coefficient": 0.25, "depth_coefficient": 0.3}),
        build_net("fullyeffgenericunet", deep_supervision=False, encoder_kwargs={"features": (4, 8, 16, 16, 16, 16)}),
    ]  # fmt: skip
    for net, size in zip(nets, (32, 64)):  # nnU-Net's encoder halves 5 times
        net.eval()
        blocks = sum(isinstance(m, MBConv) for m in net.decoder.modules())
        fast = optimize_for_inference(net)
        assert sum(isinstance(m, InstanceNormMBConv) for m in fast.modules()) == blocks > 0
        x = torch.randn(1, 1, size, size, size)
        with torch.no_grad():
            reference, output = net(x), fast(x)
        # float32 rounding: on the 64^3 net (outputs up to 9.4) oneDNN's convs alone, without this module, are
        # 3.7e-4 from a float64 forward, and eager float32 7e-5
        torch.testing.assert_close(output, reference, atol=1e-4 * reference.abs().max().item(), rtol=1e-4)


def test_profile_times_forwards_without_gradients():
    """``effseg profile --time`` times inference: no autograd graph (the inference forms fall back to the eager
    modules under gradients, and a graph would hold every activation)."""
    from monai_effseg.profile import time_forward

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.is_grad_enabled())
            return x

    assert time_forward(Probe(), (1, 1, 4, 4, 4), threads=1, warmup=1, repeats=2) >= 0
    assert seen == [False, False, False]
