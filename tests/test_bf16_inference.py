"""bfloat16 CPU inference (``optimize_for_inference(bf16=True)``, the fast overlays' ``bf16_on_amx``): float32 in and
out, bfloat16 inside, InstanceNorm statistics still summed in float32; the bundle handler uses it only on a CPU
with AMX tiles and only where the bundle asks for it."""

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
from monai_effseg.deploy.optimize import optimize_for_inference
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


@pytest.mark.parametrize("has_amx, asked, expected", [(True, True, torch.bfloat16), (False, True, torch.float32),
                                                      (True, False, torch.float32)])  # fmt: skip
def test_handler_uses_bf16_only_where_asked_and_the_cpu_has_amx(has_amx, asked, expected, monkeypatch, caplog):
    monkeypatch.setattr(handler_module, "cpu_has_amx", lambda: has_amx)
    engine = Engine(lambda e, b: None)
    engine.network = _Net()
    handler = OptimizeForInference(enabled=True, bf16_on_amx=asked)
    with caplog.at_level(logging.INFO, logger=handler_module.__name__):
        handler.optimize(engine)
    assert {p.dtype for p in engine.network.parameters()} == {expected}
    if asked and not has_amx:
        assert "not on a CPU with AMX tiles" in caplog.text
    handler.restore(engine)
    assert {p.dtype for p in engine.network.parameters()} == {torch.float32}


def test_full_path_stays_float32_and_the_fast_overlay_chooses_per_bundle():
    """``inference.json`` (the papers' recipe) never runs bf16; each fast overlay says whether its bundle passed the
    bf16 accuracy check (docs/fast_cpu_inference.md), and every handler reads the flag through ``as_flag``."""
    for bundle in sorted((REPO / "bundles").iterdir()):
        inference = json.loads((bundle / "configs" / "inference.json").read_text())
        assert inference["bf16_on_amx"] is False, bundle.name
        handler = next(h for h in inference["handlers"] if h["_target_"].endswith("OptimizeForInference"))
        assert handler["bf16_on_amx"] == "$monai_effseg.utils.as_flag(@bf16_on_amx, 'bf16_on_amx')"
        fast = bundle / "configs" / "inference_fast.json"
        if fast.is_file():
            assert isinstance(json.loads(fast.read_text())["bf16_on_amx"], bool), bundle.name
