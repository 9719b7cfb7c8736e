"""The lightweight blocks of Tustumi's thesis (MobileNetV2/V3, ShuffleNetV2, DSTS): closed-form parameter counts in 2D
and 3D, behaviour, TorchScript."""

from __future__ import annotations

import pytest
import torch

from monai_effseg.blocks import BLOCKS, DSTSConv, build_block
from monai_effseg.blocks.dsts import dsts_conv_weights


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def se_params(channels: int, squeeze: int) -> int:
    return 2 * channels * squeeze + squeeze + channels  # two 1x1 convs with bias


def inverted_residual_params(cin, cout, k, dims, expand, se_ratio) -> int:
    mid = round(cin * expand)
    n = (cin * mid + 2 * mid) if expand != 1 else 0  # expand conv + BN
    n += mid * k**dims + 2 * mid  # depthwise + BN
    n += se_params(mid, int(cin * se_ratio)) if se_ratio else 0
    return n + mid * cout + 2 * cout  # projection + BN


def shuffle_params(cin, cout, k, dims, stride, se_ratio) -> int:
    b = cout // 2
    se = se_params(b, int(b * se_ratio)) if se_ratio else 0
    if cin == cout and stride == 1:  # basic unit: one branch on half the channels
        return 2 * (b * b + 2 * b) + b * k**dims + 2 * b + se
    shortcut = cin * k**dims + 2 * cin + cin * b + 2 * b
    branch = cin * b + 2 * b + b * k**dims + 2 * b + b * b + 2 * b
    return shortcut + branch + se


def dsts_params(cin, cout, k, dims, se_ratio) -> int:
    se = se_params(cout, int(cin * se_ratio)) if se_ratio else 0
    return dsts_conv_weights(cin, cout, k, dims) + 2 * (2 * cin) + 2 * cout + se


CASES = [(16, 16, 3, 1), (16, 24, 3, 2), (24, 40, 5, 2), (40, 40, 5, 1), (32, 16, 3, 1)]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("cin,cout,k,stride", CASES)
@pytest.mark.parametrize("expand,se", [(1, 0.0), (6, 0.25), (4, 0.0)])
def test_mobilenet_blocks_closed_form(dims, cin, cout, k, stride, expand, se):
    expected = inverted_residual_params(cin, cout, k, dims, expand, se)
    for name in ("inverted_residual", "mobilenetv3"):
        block = build_block(name, dims, cin, cout, k, stride, expand, se)
        assert n_params(block) == expected, name


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("cin,cout,k,stride", CASES)
@pytest.mark.parametrize("se", [0.0, 0.25])
def test_shufflenet_closed_form(dims, cin, cout, k, stride, se):
    block = build_block("shufflenetv2", dims, cin, cout, k, stride, 1.0, se)
    assert n_params(block) == shuffle_params(cin, cout, k, dims, stride, se)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("cin,cout,k,stride", CASES)
@pytest.mark.parametrize("se", [0.0, 0.25])
def test_dsts_closed_form(dims, cin, cout, k, stride, se):
    block = build_block("dsts", dims, cin, cout, k, stride, 1.0, se)
    assert n_params(block) == dsts_params(cin, cout, k, dims, se)
    # conv weights alone: c(k + k^(d-1)) + 2c*o; at k=3, o=c, 3D: 2c^2 + 12c
    weights = sum(p.numel() for name, p in block.named_parameters() if p.dim() > 1 and "se." not in name)
    assert weights == dsts_conv_weights(cin, cout, k, dims)
    if dims == 3 and k == 3 and cin == cout:
        assert weights == 2 * cin**2 + 12 * cin


def test_registry_names_and_rejections():
    assert {"inverted_residual", "mobilenetv3", "shufflenetv2", "shufflenetv2_down", "dsts"} <= set(BLOCKS.names())
    with pytest.raises(ValueError, match="expansion"):
        build_block("shufflenetv2", 2, 16, 16, expand_ratio=6)
    with pytest.raises(ValueError, match="expansion"):
        build_block("dsts", 3, 16, 16, expand_ratio=6)
    with pytest.raises(ValueError, match="even"):
        build_block("shufflenetv2", 2, 16, 15, stride=2)


def test_mobilenetv3_row_activation_and_hard_gate():
    relu = build_block("mobilenetv3", 2, 16, 16, 3, 1, 4, 0.25, act="relu")
    hswish = build_block("mobilenetv3", 2, 16, 16, 3, 1, 4, 0.25, act="hardswish")
    assert isinstance(relu.body.expand.act, torch.nn.ReLU)
    assert isinstance(hswish.body.expand.act, torch.nn.Hardswish)
    assert type(hswish.body.se).__name__ == "HardSqueezeExcitation"


def test_shuffle_units_split_and_shuffle():
    unit = build_block("shufflenetv2", 2, 8, 8).eval()
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        y = unit(x)
        # before the shuffle: [kept half, branch(other half)]; the 2-group shuffle interleaves them
        expected = torch.cat([x[:, :4], unit.branch(x[:, 4:])], 1)
        expected = expected.view(1, 2, 4, 5, 5).transpose(1, 2).reshape(1, 8, 5, 5)
    torch.testing.assert_close(y, expected)
    down = build_block("shufflenetv2", 3, 8, 16, 3, (1, 2, 2))
    assert type(down).__name__ == "ShuffleDownUnit"
    assert down(torch.randn(1, 8, 4, 6, 6)).shape == (1, 16, 4, 3, 3)


@pytest.mark.parametrize("dims,k", [(3, 3), (3, 5), (2, 3)])
def test_dsts_branches_and_fused_form(dims, k):
    conv = DSTSConv(dims, 4, k, stride=2 if dims == 2 else (1, 2, 2))
    assert tuple(conv.temporal.weight.shape[2:]) == (k,) + (1,) * (dims - 1)
    assert tuple(conv.spatial.weight.shape[2:]) == (1,) + (k,) * (dims - 1)
    x = torch.randn(2, 4, *([9] * dims))
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    with torch.no_grad():
        conv.fused = False
        reference = conv(x)
        # interleaved concatenation: channel 2i = temporal branch of channel i, 2i + 1 = spatial branch
        torch.testing.assert_close(reference[:, 0::2], conv.temporal(x))
        torch.testing.assert_close(reference[:, 1::2], conv.spatial(x))
        conv.fused = True
        fused = conv(x.contiguous(memory_format=fmt))
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,stride", [(3, 1), (3, (1, 2, 2)), (3, 2), (5, (2, 1, 1))])
def test_dsts_folded_form_equals_3d_branches(k, stride):
    """NCDHW on CPU runs the branches as 2D convs; outputs and all gradients match the plain 3D convolutions."""
    conv = DSTSConv(3, 4, k, stride=stride, fused=False)
    x = torch.randn(2, 4, 8, 10, 9, requires_grad=True)
    folded = conv(x)
    grads = torch.autograd.grad(folded.square().sum(), [x, conv.temporal.weight, conv.spatial.weight])
    plain = torch.stack([conv.temporal(x), conv.spatial(x)], dim=2).flatten(1, 2)
    plain_grads = torch.autograd.grad(plain.square().sum(), [x, conv.temporal.weight, conv.spatial.weight])
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["inverted_residual", "mobilenetv3", "shufflenetv2", "dsts"])
@pytest.mark.parametrize("dims", [2, 3])
def test_blocks_script_equal_eager(name, dims):
    expand = 3 if name in ("inverted_residual", "mobilenetv3") else 1
    for cin, cout, stride in ((8, 8, 1), (8, 12, 2)):
        block = build_block(name, dims, cin, cout, 3, stride, expand, 0.25).eval()
        x = torch.randn(2, cin, *([8] * dims))
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(block)(x), block(x))
