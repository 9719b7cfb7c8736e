"""MBConv, depthwise-separable, Fused-MBConv, Fused-MBConv1 and SE blocks: closed-form parameter counts in 2D and 3D,
residual and stochastic-depth behaviour, TorchScript."""

from __future__ import annotations

import pytest
import torch

from monai_effseg.blocks import BLOCKS, build_block
from monai_effseg.blocks.se import make_divisible, se_channels

BN = ("batch", {})  # BN (affine) counts 2 per channel, like InstanceNorm(affine) and the default


def se_params(channels: int, squeeze: int) -> int:
    return channels * squeeze + squeeze + squeeze * channels + channels


def mbconv_params(cin: int, cout: int, k: int, e: float, se: float, dims: int, divisor: int = 1) -> int:
    mid = round(cin * e)
    expand = cin * mid + 2 * mid if e != 1 else 0
    depthwise = mid * k**dims + 2 * mid
    squeeze = se_params(mid, se_channels(cin, se, divisor)) if se > 0 else 0
    return expand + depthwise + squeeze + mid * cout + 2 * cout


def fused_params(cin: int, cout: int, k: int, e: float, se: float, dims: int) -> int:
    mid = round(cin * e)
    squeeze = se_params(mid, se_channels(cin, se)) if se > 0 else 0
    return cin * mid * k**dims + 2 * mid + squeeze + mid * cout + 2 * cout


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_blocks_are_registered():
    assert {"mbconv", "ds", "fused_mbconv", "cn", "squeeze-excitation"} <= set(BLOCKS.names())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "name,cin,cout,k,stride,e,se",
    [
        ("mbconv", 16, 24, 3, 2, 6, 0.25),
        ("mbconv", 24, 24, 5, 1, 6, 0.25),
        ("mbconv", 40, 80, 3, 2, 6, 0.0),
        ("ds", 32, 16, 3, 2, 1, 0.25),
        ("fused_mbconv", 24, 48, 3, 2, 4, 0.0),
        ("fused_mbconv", 24, 24, 3, 1, 1, 0.0),  # d-li14's expand-1 Fused-MBConv: 3x3 + 1x1
        ("fused_mbconv", 16, 16, 3, 1, 4, 0.25),
        ("cn", 24, 24, 3, 1, 1, 0.0),
    ],
)
def test_parameter_count_closed_form_and_shape(name, cin, cout, k, stride, e, se, dims):
    block = build_block(name, dims, cin, cout, kernel_size=k, stride=stride, expand_ratio=e, se_ratio=se, norm=BN)
    expected = {
        "mbconv": mbconv_params(cin, cout, k, e, se, dims),
        "ds": mbconv_params(cin, cout, k, 1, se, dims),
        "fused_mbconv": fused_params(cin, cout, k, e, se, dims),
        "cn": cin * cout * k**dims + 2 * cout,
    }[name]
    assert count(block) == expected
    x = torch.randn(2, cin, *[8] * dims)
    assert block(x).shape == (2, cout, *[8 // stride] * dims)


@pytest.mark.parametrize("dims", [2, 3])
def test_squeeze_excitation_block(dims):
    se = build_block("squeeze-excitation", dims, 32, 32, se_ratio=0.25)
    assert count(se) == se_params(32, 8)
    # zero excitation: every gate is sigmoid(0) = 0.5
    torch.nn.init.zeros_(se.excite.weight)
    torch.nn.init.zeros_(se.excite.bias)
    x = torch.randn(1, 32, *[6] * dims)
    torch.testing.assert_close(se(x), x * 0.5)
    assert isinstance(build_block("squeeze-excitation", dims, 8, 8, se_ratio=0.0), torch.nn.Identity)
    with pytest.raises(ValueError, match="keeps width"):
        build_block("squeeze-excitation", dims, 8, 16, se_ratio=0.25)


def test_squeeze_width_conventions():
    # EfficientNet: int(block input * ratio); d-li14 EfficientNetV2: make_divisible(in // 4, 8)
    assert se_channels(80, 0.25) == 20 and se_channels(80, 0.25, divisor=8) == 24
    assert se_channels(304, 0.25) == 76 and se_channels(304, 0.25, divisor=8) == 80
    assert se_channels(6, 0.25) == 1  # never zero
    assert make_divisible(1280 * 1.1) == 1408 and make_divisible(32 * 1.4) == 48 and make_divisible(320 * 1.8) == 576
    block = build_block("mbconv", 3, 80, 80, expand_ratio=6, se_ratio=0.25, se_divisor=8)
    assert block.body.se.squeeze.out_channels == 24 and block.body.se.excite.out_channels == 480


@pytest.mark.parametrize("name,e", [("mbconv", 4), ("ds", 1), ("fused_mbconv", 4), ("cn", 1)])
def test_residual_only_when_stride_1_and_width_kept(name, e):
    se = 0.0 if name == "cn" else 0.25
    same = build_block(name, 3, 16, 16, expand_ratio=e, se_ratio=se, norm=BN).eval()
    assert same.residual
    assert not build_block(name, 3, 16, 16, stride=2, expand_ratio=e, se_ratio=se).residual
    assert not build_block(name, 3, 16, 24, expand_ratio=e, se_ratio=se).residual
    # zero the last norm: the body outputs 0, so the block is the identity through its skip
    last_norm = [m for m in same.modules() if isinstance(m, torch.nn.BatchNorm3d)][-1]
    torch.nn.init.zeros_(last_norm.weight)
    torch.nn.init.zeros_(last_norm.bias)
    x = torch.randn(2, 16, 6, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(same(x), x)


def test_drop_connect_drops_whole_samples_in_training_only():
    block = build_block("mbconv", 3, 8, 8, expand_ratio=4, se_ratio=0.25, drop_connect_rate=1.0)
    x = torch.randn(3, 8, 4, 4, 4)
    torch.testing.assert_close(block.train()(x), x)  # every residual branch dropped
    assert not torch.allclose(block.eval()(x), x)


def test_se_scales_in_place_only_at_inference_and_never_corrupts_the_input():
    block = build_block("mbconv", 3, 8, 8, expand_ratio=4, se_ratio=0.25).eval()
    x = torch.randn(1, 8, 6, 6, 6)
    before = x.clone()
    with torch.no_grad():
        y = block(x)
    torch.testing.assert_close(x, before)
    torch.testing.assert_close(block(x), y)  # the autograd path gives the same output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name,e,se", [("mbconv", 4, 0.25), ("ds", 1, 0.25), ("fused_mbconv", 4, 0.25), ("cn", 1, 0)])
def test_torchscript_matches_eager(name, e, se):
    block = build_block(name, 3, 8, 8, expand_ratio=e, se_ratio=se, drop_connect_rate=0.0)
    scripted = torch.jit.script(block)
    x = torch.randn(2, 8, 6, 6, 6)
    for train in (True, False):
        block.train(train)
        scripted.train(train)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), block(x))
