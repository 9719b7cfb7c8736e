"""Hao's residual block and ResidualUNet: closed-form parameter counts, shapes, Table 4.2 switches, TorchScript."""

from __future__ import annotations

import math

import pytest
import torch

from monai_effseg.blocks import BLOCKS, build_block
from monai_effseg.blocks.residual import BasicResidualBlock
from monai_effseg.nets import NETS, ResidualUNet, build_net
from monai_effseg.nets.residual_unet import KITS19_KERNELS, KITS19_STRIDES, TABLE_4_2_ABLATIONS


def conv_params(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    return k * c_in * c_out + (c_out if bias else 0)


def residual_block_params(k: int, c_in: int, c_out: int, projection: bool) -> int:
    """conv-IN (+bias, IN affine) twice, plus a 1x1 conv (no bias) + IN when the shortcut projects."""
    body = conv_params(k, c_in, c_out) + 2 * c_out + conv_params(k, c_out, c_out) + 2 * c_out
    return body + (c_in * c_out + 2 * c_out if projection else 0)


def plain_pair_params(k: int, c_in: int, c_out: int) -> int:
    return conv_params(k, c_in, c_out) + 2 * c_out + conv_params(k, c_out, c_out) + 2 * c_out


def residual_unet_params(in_ch, classes, features, kernels, strides, residual=True, deep_supervision=True) -> int:
    """ResidualUNet in closed form: encoder levels, then per decoder level a transposed conv (no bias) + IN, the
    stage on [up, skip] (2 * width in), and a 1x1 head with bias on supervised levels."""
    vol = [math.prod(k) if isinstance(k, tuple) else k**3 for k in kernels]
    stride_vol = [math.prod(s) if isinstance(s, tuple) else s**3 for s in strides]
    stage = (
        (lambda k, a, b, proj: residual_block_params(k, a, b, proj))
        if residual
        else (lambda k, a, b, proj: plain_pair_params(k, a, b))
    )
    total, c_in = 0, in_ch
    for level, c in enumerate(features):
        total += stage(vol[level], c_in, c, c_in != c or stride_vol[level] != 1)
        c_in = c
    for level in reversed(range(len(features) - 1)):
        w, below = features[level], features[level + 1]
        total += below * w * stride_vol[level + 1] + 2 * w
        total += stage(vol[level], 2 * w, w, True)
        if deep_supervision or level == 0:
            total += w * classes + classes
    return total


def test_residual_block_is_registered_with_both_shortcuts():
    assert BLOCKS.get("residual") is BasicResidualBlock
    identity = build_block("residual", 3, 8, 8, kernel_size=3)
    projection = build_block("residual", 3, 8, 16, kernel_size=(3, 3, 1), stride=(2, 2, 1))
    assert isinstance(identity.shortcut, torch.nn.Identity)
    assert sum(p.numel() for p in identity.parameters()) == residual_block_params(27, 8, 8, False)
    assert sum(p.numel() for p in projection.parameters()) == residual_block_params(9, 8, 16, True)
    assert projection(torch.randn(2, 8, 9, 10, 5)).shape == (2, 16, 5, 5, 5)
    block2d = build_block("residual", 2, 4, 6, stride=2)
    assert block2d(torch.randn(1, 4, 7, 8)).shape == (1, 6, 4, 4)
    with pytest.raises(ValueError, match="no expansion or SE"):
        build_block("residual", 3, 8, 8, expand_ratio=4)


def test_residual_block_adds_its_input():
    block = BasicResidualBlock(3, 4, 4, act=("leakyrelu", {"negative_slope": 1.0}))  # identity activation
    for p in (block.conv1.conv.weight, block.conv2.weight):
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 5, 5, 5)
    # zero convs give zero (normalised) body output: y = 0 + shortcut(x) = x
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("name,switches", list(TABLE_4_2_ABLATIONS.items()))
def test_parameter_counts_match_the_closed_form(name, switches):
    features = (8, 16, 32, 32)
    kernels, strides = KITS19_KERNELS[:4], KITS19_STRIDES[:4]
    net = ResidualUNet(3, 1, 3, features, kernels, strides, **switches)
    expected = residual_unet_params(1, 3, features, kernels, strides, **switches)
    assert sum(p.numel() for p in net.parameters()) == expected, name


def test_kits19_configuration():
    assert "residual_unet_kits19" in NETS
    net = build_net("residual_unet_kits19")
    expected = residual_unet_params(1, 3, (32, 64, 128, 256, 320, 320), KITS19_KERNELS, KITS19_STRIDES)
    assert sum(p.numel() for p in net.parameters()) == expected
    # five supervised decoder outputs L1..L5 of the thesis' Figure 3.2
    assert len(net.decoder.heads) == 5


def test_deep_supervision_outputs_and_ablations():
    x = torch.randn(2, 1, 32, 32, 8)
    net = ResidualUNet(3, 1, 3, (8, 16, 32, 32), KITS19_KERNELS[:4], KITS19_STRIDES[:4]).train()
    outs = net(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 32, 8), (16, 16, 8), (8, 8, 8)]
    flat = ResidualUNet(3, 1, 3, (8, 16, 32, 32), KITS19_KERNELS[:4], KITS19_STRIDES[:4],
                        **TABLE_4_2_ABLATIONS["PM without Res and DS"]).train()  # fmt: skip
    assert flat(x).shape == (2, 3, 32, 32, 8)
    assert not any(isinstance(m, BasicResidualBlock) for m in flat.modules())
    # eval mode: one full-resolution output whatever the supervision
    assert net.eval()(x).shape == (2, 3, 32, 32, 8)


def test_upsampling_is_transposed_conv_in_leakyrelu():
    net = ResidualUNet(3, 1, 3, (8, 16, 32))
    up = net.decoder.ups[0]
    assert [type(m).__name__ for m in up] == ["ConvTranspose3d", "InstanceNorm3d", "LeakyReLU"]
    assert up[0].bias is None  # the IN after it would cancel a bias


def test_scripted_equals_eager():
    net = ResidualUNet(3, 1, 3, (8, 16, 32), ((3, 3, 1), 3, 3), (1, (2, 2, 1), 2)).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_the_weighted_multiscale_loss_trains():
    from monai_effseg.losses import GeneralizedSurfaceDiceLoss, WeightedDeepSupervisionLoss

    torch.manual_seed(0)
    net = ResidualUNet(3, 1, 3, (4, 8, 16)).train()
    loss_fn = WeightedDeepSupervisionLoss(GeneralizedSurfaceDiceLoss(), [1.0, 0.5], normalize=True)
    x = torch.randn(2, 1, 8, 8, 8)
    y = (x > 0.5).float() + (x > 1.5).float()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


def test_lr_handler_steps_the_plateau_scheduler_on_the_loss_and_any_other_without_argument():
    """train.json's ReduceLROnPlateau gets the epoch loss; the demo's PolynomialLR, swapped in alone, gets nothing."""
    from ignite.engine import Engine, Events
    from monai.handlers import LrScheduleHandler

    from monai_effseg.training import lr_step_transform

    def run(make_scheduler, losses):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make_scheduler(optimizer)
        engine = Engine(lambda engine, batch: None)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(
            train_loss_epoch=losses[e.state.epoch - 1]))  # fmt: skip
        LrScheduleHandler(scheduler, step_transform=lr_step_transform(scheduler)).attach(engine)
        engine.run([0], max_epochs=len(losses))
        return optimizer.param_groups[0]["lr"]

    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)  # noqa: E731
    assert run(plateau, [1.0, 0.5, 0.25, 0.125]) == 1.0  # improving: no step down
    assert run(plateau, [1.0, 1.0, 1.0, 1.0]) == 0.5  # two epochs without improvement: one step down
    poly = lambda opt: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=1.0)  # noqa: E731
    assert run(poly, [1.0] * 3) == pytest.approx(0.25)
