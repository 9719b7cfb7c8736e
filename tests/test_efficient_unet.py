"""EfficientNet(V2) encoders, EfficientUNet / FullyEfficientUNet / FullyEffGenericUNet: Martinho's Table 1 parameter
counts (exact), FLOPs (2 x MAC, within 1% of the reference), the thesis' encoder modifications, TorchScript, MONAI
FlexibleUNet registration, the profile table and the inference optimisations."""

from __future__ import annotations

import pytest
import torch

from monai_effseg.encoders import build_encoder
from monai_effseg.nets import EfficientUNet, FullyEffGenericUNet, build_net
from monai_effseg.nets.thesis_table1 import REFERENCE_2XMAC_T, REFERENCE_USED_PARAMS_M, THESIS_TABLE1
from monai_effseg.profile import count_flops, count_params, format_profiles, profile_model

# Parameters our modules really have (no ImageNet head) and the head the thesis counted on top of them.
USED_PARAMS = {
    "efficientunet-b0": 17_715_004, "efficientunet-b1": 20_473_120, "efficientunet-b2": 21_861_634,
    "efficientunet-b3": 25_379_240, "efficientunet-b4": 33_153_432, "efficientunet-b5": 44_727_888,
    "efficientunet-b6": 58_239_144, "efficientunet-b7": 82_755_856,
    "fullyefficientunet-b0": 13_507_908, "fullyefficientunet-b1": 16_266_024, "fullyefficientunet-b2": 17_666_830,
    "fullyefficientunet-b3": 21_220_350, "fullyefficientunet-b4": 29_050_040, "fullyefficientunet-b5": 40_668_280,
    "fullyefficientunet-b6": 54_259_804, "fullyefficientunet-b7": 78_870_224,
    "efficientunetv2-s": 36_011_504, "efficientunetv2-m": 71_351_176, "efficientunetv2-l": 140_432_360,
    "fullyefficientunetv2-s": 31_902_736, "fullyefficientunetv2-m": 67_290_032, "fullyefficientunetv2-l": 136_540_390,
    "fullyeffgenericunet": 28_246_264,
}  # fmt: skip
IMAGENET_HEAD = {"b0": 1_693_160, "b1": 1_693_160, "b2": 1_907_432, "b3": 2_129_896, "b4": 2_599_400,
                 "b5": 3_101_672, "b6": 3_636_712, "b7": 4_204_520, "v2-s": 2_255_336, "v2-m": 2_714_088,
                 "v2-l": 2_943_464}  # fmt: skip

# Rows where Table 1 disagrees with itself or with every structure that reproduces the other rows (docs/efficientnet.md):
# only the network total's last printed digit (its encoder and decoder columns match exactly) ...
TOTAL_LAST_DIGIT = {"efficientunet-b1", "efficientunet-b2", "efficientunet-b5", "efficientunet-b6",
                    "fullyefficientunet-b1", "fullyefficientunet-b3", "fullyefficientunet-b5",
                    "fullyefficientunet-b6", "fullyefficientunet-b7", "fullyefficientunetv2-s",
                    "fullyefficientunetv2-m"}  # fmt: skip
# ... the FullyEfficient decoders of b3 and up and of V2 (-0.05%..+0.35%, unexplained) ...
FULLY_DECODER_GAP = {"fullyefficientunet-b3", "fullyefficientunet-b5", "fullyefficientunet-b6",
                     "fullyefficientunet-b7", "fullyefficientunetv2-s", "fullyefficientunetv2-m",
                     "fullyefficientunetv2-l"}  # fmt: skip
# ... and FullyEfficientUNet-b4, whose row is a copy of EfficientUNet-b4's.
COPIED_ROW = {"fullyefficientunet-b4"}


def arch_of(name: str) -> str:
    """ "fullyefficientunetv2-s" -> "v2-s", "efficientunet-b0" -> "b0"."""
    return "v2-" + name[-1] if "v2" in name else name.rsplit("-", 1)[-1]


def build_meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):  # no memory, no init: counting only
        return build_net(name, **kwargs)


def test_every_table1_row_is_registered():
    assert set(THESIS_TABLE1) <= set(__import__("monai_effseg.nets", fromlist=["NETS"]).NETS.names())


@pytest.mark.parametrize("name", sorted(USED_PARAMS))
def test_table1_parameter_counts(name):
    net = build_meta(name)
    assert count_params(net) == USED_PARAMS[name]
    head = getattr(net.encoder, "imagenet_head_params", 0)
    assert head == (0 if name == "fullyeffgenericunet" else IMAGENET_HEAD[arch_of(name)])
    if name in COPIED_ROW:
        return
    _, _, _, total, enc, dec = THESIS_TABLE1[name]
    ours_total = (count_params(net) + head) / 1e6
    ours_enc = (count_params(net.encoder) + head) / 1e6
    ours_dec = count_params(net.decoder.stages) / 1e6
    # the network = encoder + decoder stages + transposed convs + deep-supervision heads (reference section 1).
    # Table 1 prints 3 decimals in M; V2-L's network and encoder only as 0.143G / 0.128G
    digits = 0 if name.endswith("v2-l") else 3
    assert round(ours_enc, digits) == enc
    if name in FULLY_DECODER_GAP:
        assert abs(ours_dec / dec - 1) < 0.004
        assert round(ours_total, digits) == total if digits == 0 else abs(ours_total / total - 1) < 0.001
        return
    assert round(ours_dec, 3) == dec
    if name in TOTAL_LAST_DIGIT:
        assert abs(ours_total - total) < 0.0015
    else:
        assert round(ours_total, digits) == total


@pytest.mark.parametrize("name", sorted(REFERENCE_USED_PARAMS_M))
def test_reference_used_params_column(name):
    if name == "efficientunetv2-l":
        # the reference sketch put the official 32-channel stem into the d-li14 port; with it we match its figure exactly,
        # the port itself (24 channels, ours) also reproduces the thesis' V2-L decoder 13.131M and 0.924T
        sketch = build_meta(name, encoder_kwargs={"stem_channels": 32})
        assert round(count_params(sketch) / 1e6, 3) == REFERENCE_USED_PARAMS_M[name]
        assert count_params(sketch) == 140_451_872
        assert round(count_params(build_meta(name).decoder.stages) / 1e6, 3) == 13.131
        assert round(count_params(sketch.decoder.stages) / 1e6, 3) == 13.138
    else:
        assert round(count_params(build_meta(name)) / 1e6, 3) == REFERENCE_USED_PARAMS_M[name]


def test_encoder_counts_equal_monai_efficientnet_with_head():
    from monai.networks.nets import EfficientNetBN

    monai_b0 = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=3, in_channels=1)
    ours = build_encoder("efficientnet-b0", 3, 1)
    assert count_params(monai_b0) == count_params(ours) + ours.imagenet_head_params == 5_969_380
    with torch.device("meta"):
        b7 = build_encoder("efficientnet-b7", 3, 1)
    assert count_params(b7) + b7.imagenet_head_params == 71_319_992
    with torch.device("meta"):
        official = build_encoder("efficientnetv2-s", 3, 1, flavour="official")
    assert round((count_params(official) + official.imagenet_head_params) / 1e6, 3) == 23.676  # reference section 4


def test_thesis_encoder_modifications():
    b0 = build_encoder("efficientnet-b0", 3, 1)
    assert b0.out_channels == [32, 16, 24, 40, 112, 320]
    assert b0.strides == [(1, 1, 1)] + [(2, 2, 2)] * 5
    assert b0.stages[0][0].conv.stride == (1, 1, 1) and b0.stages[1][0].body.depthwise.conv.stride == (2, 2, 2)
    assert not [m for m in b0.modules() if isinstance(m, torch.nn.Linear)]  # no ImageNet head
    features = b0.eval()(torch.randn(1, 1, 32, 32, 32))
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, 32 // 2**i, 32 // 2**i, 32 // 2**i) for i, c in enumerate(b0.out_channels)
    ]
    expected = {"efficientnet-b7": [64, 32, 48, 80, 224, 640], "efficientnetv2-s": [24, 24, 48, 64, 160, 256],
                "efficientnetv2-m": [24, 24, 48, 80, 176, 512], "efficientnetv2-l": [24, 32, 64, 96, 224, 640]}  # fmt: skip
    for name, channels in expected.items():
        with torch.device("meta"):
            assert build_encoder(name, 3, 1).out_channels == channels


def test_drop_connect_grows_linearly_with_depth():
    b0 = build_encoder("efficientnet-b0", 3, 1, drop_connect_rate=0.2)
    rates = [block.drop_path.drop_prob for stage in b0.stages[1:] for block in stage]
    assert rates[0] == 0 and rates == sorted(rates) and rates[-1] == pytest.approx(0.2 * 15 / 16)


@pytest.mark.parametrize(
    "name", ["efficientunet-b0", "fullyefficientunet-b0", "efficientunetv2-s", "efficientunetv2-l"]
)
def test_flops_within_1_percent_of_reference(name):
    flops = count_flops(build_net(name), (1, 1, 128, 128, 128))
    assert flops["network"] == flops["encoder"] + flops["decoder"]
    reference = 0.924 if name == "efficientunetv2-l" else REFERENCE_2XMAC_T[name]  # V2-L: the thesis (d-li14 stem)
    assert abs(flops["network"] / 1e12 / reference - 1) < 0.01


def test_flops_v2l_with_the_sketch_stem_match_the_reference_sketch():
    flops = count_flops(build_net("efficientunetv2-l", encoder_kwargs={"stem_channels": 32}), (1, 1, 128, 128, 128))
    assert abs(flops["network"] / 1e12 / REFERENCE_2XMAC_T["efficientunetv2-l"] - 1) < 0.01


def small_net(decoder: str = "nnunet", encoder: str = "efficientnet-b0", **kwargs) -> EfficientUNet:
    return EfficientUNet(
        encoder, decoder, out_channels=3, decoder_channels=[8, 8, 16, 16, 16],
        encoder_kwargs={"width_coefficient": 0.25, "depth_coefficient": 0.3, "drop_connect_rate": 0.0}, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("decoder", ["nnunet", "mbconv"])
def test_deep_supervision_outputs_and_2d(decoder):
    net = small_net(decoder)
    outputs = net(torch.randn(2, 1, 32, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32 // 2**i, 32 // 2**i, 32 // 2**i) for i in range(5)]
    assert net.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    net2d = small_net(decoder, spatial_dims=2).eval()
    assert net2d(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("decoder,encoder", [("nnunet", "efficientnet-b0"), ("mbconv", "efficientnetv2-s")])
def test_torchscript_matches_eager_in_both_modes(decoder, encoder):
    net = small_net(decoder, encoder)
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, 32, 32, 32)
    for train in (True, False):
        net.train(train)
        scripted.train(train)
        eager, script = net(x), scripted(x)
        eager = eager if isinstance(eager, list) else [eager]
        script = script if isinstance(script, list) else [script]
        assert len(eager) == len(script) == (5 if train else 1)
        for a, b in zip(eager, script):
            torch.testing.assert_close(a, b)


def test_fully_eff_generic_unet_is_nnunet_encoder_with_mbconv_decoder():
    with torch.device("meta"):
        net = FullyEffGenericUNet()
    assert count_params(net.encoder) == 14_025_120 and count_params(net.decoder.stages) == 12_399_320
    assert net.decoder.decoder_channels == [32, 64, 128, 256, 320]


def test_nnunet_decoder_keeps_generic_alias():
    """``"generic"`` (nnU-Net v1's ``Generic_UNet``) still builds the nnU-Net decoder, as bundle configs name it, but
    is not listed as a decoder of its own."""
    from monai_effseg.decoders import DECODERS
    from monai_effseg.encoders import ENCODERS

    assert DECODERS.get("generic") is DECODERS.get("nnunet") and "generic" in DECODERS
    assert "generic" not in DECODERS.names() and "nnunet" in ENCODERS
    with torch.device("meta"):
        net = EfficientUNet("efficientnet-b0", "generic", out_channels=3)
    assert type(net.decoder) is DECODERS.get("nnunet")


def test_flexible_unet_backbone():
    from monai.networks.nets import FlexibleUNet
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    assert {"efficientnet-b0-3d", "efficientnet-b7-3d", "efficientnetv2-s-3d", "efficientnetv2-l-3d"} <= set(
        FLEXUNET_BACKBONE.register_dict
    )
    assert FLEXUNET_BACKBONE.register_dict["efficientnetv2-s-3d"]["feature_channel"] == (24, 48, 64, 160, 256)
    net = FlexibleUNet(in_channels=1, out_channels=4, backbone="efficientnetv2-s-3d", spatial_dims=3, pretrained=False)
    assert net.eval()(torch.randn(1, 1, 64, 64, 64)).shape == (1, 4, 64, 64, 64)
    with pytest.raises(ValueError, match="pretrained"):
        FlexibleUNet(in_channels=1, out_channels=4, backbone="efficientnet-b0-3d", spatial_dims=3, pretrained=True)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flexible_unet_with_registered_backbone_scripts(spatial_dims):
    from monai.networks.nets import FlexibleUNet

    torch.manual_seed(0)
    net = FlexibleUNet(in_channels=1, out_channels=3, backbone="efficientnet-b0-3d", spatial_dims=spatial_dims).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, *([32] * spatial_dims))
    with torch.no_grad():
        out = scripted(x)
        assert out.shape == (1, 3, *([32] * spatial_dims))
        torch.testing.assert_close(out, net(x))


def test_profile_prints_table1_format_with_used_and_thesis_params():
    p = profile_model("efficientunet-b0", build_net("efficientunet-b0"), (1, 1, 128, 128, 128))
    assert p.params["network"] == 17_715_004 and p.head_params == 1_693_160 and p.thesis_params == 19_408_164
    table = format_profiles([p])
    for cell in ("| efficientunet-b0 | 1x1x128x128x128 |", "19.408M", "5.969M", "11.617M", "17,715,004", "1,693,160"):
        assert cell in table


def warmed_up(net: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm running statistics from one batch, so that eval-mode activations are well scaled."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    with torch.no_grad():
        net.train()(torch.randn(2, 1, 32, 32, 32))
    return net.eval()


@pytest.mark.parametrize("decoder", ["nnunet", "mbconv"])
def test_optimize_for_inference_keeps_outputs(decoder):
    from monai_effseg.deploy.optimize import ConcatFreeUNetDecoder, FusedResidualBlock, optimize_for_inference
    from monai_effseg.nets import PlainUNet

    for net in (
        warmed_up(small_net(decoder, "efficientnetv2-s")),
        PlainUNet(features=(8, 16, 32), out_channels=3).eval(),
    ):
        fast = optimize_for_inference(net)
        x = torch.randn(2, 1, 32, 32, 32)
        with torch.no_grad():
            reference, output = net(x), fast(x)
        torch.testing.assert_close(output, reference, atol=1e-4, rtol=1e-4)
        assert output.is_contiguous()
        # the nnU-Net decoder (not the MBConv one) runs without building [upsampled, skip]
        concat_free = isinstance(fast.decoder, ConcatFreeUNetDecoder)
        assert concat_free == (decoder == "nnunet" or isinstance(net, PlainUNet))
    assert any(isinstance(m, FusedResidualBlock) for m in fast.modules()) is False  # PlainUNet: nothing to fuse
