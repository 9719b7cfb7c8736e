"""MSS U-Net (Zhao et al.): the authors' plan in closed form, 5 supervised outputs, and the bundle's recipe switches."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from monai_effseg.losses import MSS_CODE_DS_WEIGHTS, MSS_PAPER_DS_WEIGHTS, ExpLogDiceCELoss
from monai_effseg.nets import MSSUNet, build_net
from monai_effseg.nets.mss_unet import MSS_FEATURES, MSS_KERNELS, MSS_STRIDES
from monai_effseg.transforms import KeepKidneyPaird

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "kits_mss_unet"


def generic_unet_v1_params(in_ch, classes, features, kernels, strides, deep_supervision=True) -> int:
    """nnU-Net v1 ``Generic_UNet``: 2 x (conv + bias, IN affine) per stage; transposed conv and 1x1 heads without
    bias; one head per decoder level with deep supervision."""
    vol = [math.prod(k) for k in kernels]
    stride_vol = [math.prod(s) if isinstance(s, tuple) else s**3 for s in strides]
    pair = lambda k, a, b: (k * a * b + b + 2 * b) + (k * b * b + b + 2 * b)  # noqa: E731
    total, c_in = 0, in_ch
    for level, c in enumerate(features):
        total += pair(vol[level], c_in, c)
        c_in = c
    for level in reversed(range(len(features) - 1)):
        w = features[level]
        total += features[level + 1] * w * stride_vol[level + 1] + pair(vol[level], 2 * w, w)
        total += w * classes if (deep_supervision or level == 0) else 0
    return total


def test_the_authors_plan_in_closed_form():
    net = build_net("mss_unet")
    assert list(MSS_FEATURES) == [30, 60, 120, 240, 320, 320]
    expected = generic_unet_v1_params(1, 3, MSS_FEATURES, MSS_KERNELS, MSS_STRIDES)
    assert sum(p.numel() for p in net.parameters()) == expected == 29_593_940
    classic = MSSUNet(deep_supervision=False)
    assert sum(p.numel() for p in classic.parameters()) == expected - 3 * (60 + 120 + 240 + 320)


def test_five_supervised_outputs_follow_the_pooling():
    net = MSSUNet(features=(4, 8, 8, 8, 8, 8)).train()
    outs = net(torch.randn(1, 1, 64, 64, 16))  # x, y divisible by 32, z by 8
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 64, 16), (32, 32, 16), (16, 16, 16), (8, 8, 8), (4, 4, 4)]
    assert len(outs) == len(MSS_PAPER_DS_WEIGHTS) == len(MSS_CODE_DS_WEIGHTS)
    assert net.eval()(torch.randn(1, 1, 64, 64, 16)).shape == (1, 3, 64, 64, 16)
    assert net.encoder.stages[0][0].conv.kernel_size == (3, 3, 1)


def test_scripted_equals_eager():
    net = MSSUNet(features=(4, 8, 8, 8, 8, 8)).eval()
    x = torch.randn(1, 1, 64, 64, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def _parse(*overrides: tuple[str, object]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json")])
    parser.update({"bundle_root": str(BUNDLE), "features": [4, 8, 8, 8, 8, 8], **dict(overrides)})
    return parser


def test_bundle_recipe_is_the_papers():
    parser = _parse()
    loss = parser.get_parsed_content("loss")
    assert loss.weights == list(MSS_PAPER_DS_WEIGHTS)
    assert isinstance(loss.loss, ExpLogDiceCELoss)
    assert loss.loss.ce_weight.tolist() == pytest.approx([0.28, 0.28, 0.44])
    assert loss.loss.dice_weights.tolist() == pytest.approx([0.4, 0.6]) and loss.loss.gamma == 0.3
    assert parser.get_parsed_content("network_def").decoder.deep_supervision
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 3e-4
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert scheduler.factor == pytest.approx(0.2) and scheduler.patience == 30
    assert parser.get_parsed_content("validate#early_stop").patience * parser["val_interval"] == 50
    assert parser["patch_size"] == [192, 192, 48] and parser["batch_size"] == 8
    assert parser["iterations_per_epoch"] == 250
    post = parser.get_parsed_content("validate#postprocessing").transforms
    assert any(isinstance(t, KeepKidneyPaird) for t in post)
    # the public code's weights are one override away
    assert _parse(("ds_weights", list(MSS_CODE_DS_WEIGHTS))).get_parsed_content("loss").weights == [
        0.6,
        0.1,
        0.1,
        0.1,
        0.1,
    ]


def test_classic_unet_switch():
    parser = _parse(("classic_unet", True))
    assert not parser.get_parsed_content("network_def").decoder.deep_supervision
    assert type(parser.get_parsed_content("loss").loss).__name__ == "DiceCELoss"
    post = parser.get_parsed_content("validate#postprocessing").transforms
    assert not any(isinstance(t, KeepKidneyPaird) for t in post)
    infer = ConfigParser()
    infer.read_config([str(BUNDLE / "configs" / "inference.json")])
    infer.update({"bundle_root": str(BUNDLE), "classic_unet": True})
    assert not any(isinstance(t, KeepKidneyPaird) for t in infer.get_parsed_content("postprocessing").transforms)
    infer["classic_unet"] = False
    infer.parse(reset=True)
    inferer = infer.get_parsed_content("inferer")
    assert inferer.overlap == 0.5 and inferer.mode == "gaussian" and inferer.mirror_axes == (0, 1, 2)
    assert any(isinstance(t, KeepKidneyPaird) for t in infer.get_parsed_content("postprocessing").transforms)
