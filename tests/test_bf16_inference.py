"""bfloat16 CPU inference (``optimize_for_inference(bf16=True)``, the fast overlays' ``bf16_where_native``): float32
in and out, bfloat16 inside, InstanceNorm statistics still summed in float32; the bundle handler uses it only on a
CPU with native bf16 dot products (AMX, AVX-512 BF16) and only where the bundle asks for it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

import monai_effseg.handlers.optimize as handler_module
from monai_effseg.deploy.instance_norm import instance_norm_act_
from monai_effseg.deploy.optimize import native_bf16, optimize_for_inference
from monai_effseg.handlers import OptimizeForInference
from monai_effseg.nets import PlainUNet

REPO = Path(__file__).resolve().parents[1]


def small_unet() -> PlainUNet:
    torch.manual_seed(0)
    return PlainUNet(spatial_dims=3, in_channels=1, out_channels=3, features=[8, 16, 32], deep_supervision=True).eval()


def test_bf16_network_takes_and_returns_float32_close_to_the_float32_one():
    net = small_unet()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        expected = optimize_for_inference(net)(x)
        fast = optimize_for_inference(net, bf16=True)
        got = fast(x)
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in net.parameters()} == {torch.float32}  # the eager network is untouched
    assert got.dtype == torch.float32 and got.shape == expected.shape and got.is_contiguous()
    # bf16 keeps 8 significant bits: each layer rounds at about 0.4%
    error = (got - expected).abs()
    assert error.mean() < 0.01 * expected.std() and error.max() < 0.1 * expected.std()
    assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.97


def test_instance_norm_statistics_of_bf16_activations_are_summed_in_float32():
    """A channel whose mean is 30 times its spread: summed in bfloat16 (8-bit mantissa) its variance would be noise."""
    torch.manual_seed(0)
    x = (torch.randn(1, 4, 16, 16, 8) + 30).contiguous(memory_format=torch.channels_last_3d)
    expected = F.instance_norm(x.to(torch.bfloat16).double())
    got = x.to(torch.bfloat16)
    instance_norm_act_(got, None, None, 1e-5)
    assert got.dtype == torch.bfloat16
    assert (got.double() - expected).abs().max() < 0.03  # bf16 rounding of values of size ~3


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = small_unet()

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, True, "AMX"), (False, True, "AVX-512 BF16"),
                                                        (False, False, None)])  # fmt: skip
def test_native_bf16_names_the_instructions_oneDNN_uses(amx, avx512_bf16, expected, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert native_bf16() == expected


def test_native_bf16_without_the_private_queries_is_none(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert native_bf16() is None


@pytest.mark.parametrize("native, asked, expected", [("AMX", True, torch.bfloat16), ("AVX-512 BF16", True, torch.bfloat16),
                                                     (None, True, torch.float32), ("AMX", False, torch.float32)])  # fmt: skip
def test_handler_uses_bf16_only_where_asked_and_the_cpu_has_native_bf16(native, asked, expected, monkeypatch, caplog):
    monkeypatch.setattr(handler_module, "native_bf16", lambda: native)
    engine = Engine(lambda e, b: None)
    engine.network = _Net()
    handler = OptimizeForInference(enabled=True, bf16_where_native=asked)
    with caplog.at_level(logging.INFO, logger=handler_module.__name__):
        handler.optimize(engine)
    assert {p.dtype for p in engine.network.parameters()} == {expected}
    if asked and native is None:
        assert "not on a CPU with AMX or AVX-512 BF16" in caplog.text
    elif asked:
        assert f"bfloat16 ({native})" in caplog.text
    handler.restore(engine)
    assert {p.dtype for p in engine.network.parameters()} == {torch.float32}


def test_full_path_stays_float32_and_the_fast_overlay_chooses_per_bundle():
    """``inference.json`` (the papers' recipe) never runs bf16; each fast overlay says whether its bundle passed the
    bf16 accuracy check (docs/fast_cpu_inference.md), and every handler reads the flag through ``as_flag``."""
    for bundle in sorted((REPO / "bundles").iterdir()):
        inference = json.loads((bundle / "configs" / "inference.json").read_text())
        assert inference["bf16_where_native"] is False, bundle.name
        handler = next(h for h in inference["handlers"] if h["_target_"].endswith("OptimizeForInference"))
        assert handler["bf16_where_native"] == "$monai_effseg.utils.as_flag(@bf16_where_native, 'bf16_where_native')"
        fast = bundle / "configs" / "inference_fast.json"
        if fast.is_file():
            assert isinstance(json.loads(fast.read_text())["bf16_where_native"], bool), bundle.name


def test_mbconv_input_covariance_of_bf16_activations_is_summed_in_float32():
    """The FullyEfficient decoder folds its expand conv's InstanceNorm from the input's covariance; bf16 input is
    multiplied in float32 (a bf16 product matrix would round every 64-row partial sum to 8 bits)."""
    from monai_effseg.deploy.instance_norm import channel_moments
    from monai_effseg.deploy.mbconv import channel_covariance

    torch.manual_seed(0)
    flat = (torch.randn(40_000, 16) @ torch.randn(16, 16) + 5).bfloat16()
    exact = torch.cov(flat.double().T, correction=0)
    mean, _ = channel_moments([flat])
    got = channel_covariance(flat, mean)
    assert got.dtype == torch.float64
    assert torch.allclose(got, exact, rtol=1e-5, atol=1e-5 * exact.abs().max().item())
