"""UpsampledConv: conv(transposed_conv(x)) at the coarse resolution equals the two ops, borders included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_effseg.deploy.optimize import ConcatFreeUNetDecoder, optimize_for_inference
from monai_effseg.deploy.polyphase import UpsampledConv
from monai_effseg.nets import PlainUNet


def pair(dims, stride, kernel, up_bias=False):
    transposed = (nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d)(6, 4, stride, stride, bias=up_bias)
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * dims
    conv = (nn.Conv3d if dims == 3 else nn.Conv2d)(4, 5, kernel, padding=tuple(k // 2 for k in kernel))
    return transposed.double(), conv.double()


@pytest.mark.parametrize(
    "dims, stride, kernel",
    [
        (3, (2, 2, 2), 3),  # nnU-Net's decoder
        (3, (2, 2, 1), (3, 3, 1)),  # anisotropic level (KiTS plans)
        (3, (1, 2, 2), 3),
        (3, (2, 2, 2), 1),
        (2, (2, 2), 3),
        (2, (3, 3), 5),  # phases whose windows need asymmetric padding
    ],
)
def test_equals_transposed_then_conv(dims, stride, kernel):
    torch.manual_seed(0)
    transposed, conv = pair(dims, stride, kernel)
    folded = UpsampledConv(transposed, conv)
    x = torch.randn((2, 6) + (5, 6, 7)[:dims], dtype=torch.float64)
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    with torch.no_grad():
        reference = conv(transposed(x))
        torch.testing.assert_close(folded(x), reference, atol=1e-12, rtol=1e-12)
        channels_last = folded(x.contiguous(memory_format=fmt))
    torch.testing.assert_close(channels_last, reference, atol=1e-12, rtol=1e-12)
    assert channels_last.is_contiguous(memory_format=fmt)


def test_multiply_adds_per_fine_voxel_at_nnunet_widths():
    transposed, conv = nn.ConvTranspose3d(64, 32, 2, 2, bias=False), nn.Conv3d(32, 32, 3, padding=1)
    folded = UpsampledConv(transposed, conv)
    per_fine_voxel = folded.conv.weight.numel() / 8  # one coarse voxel makes 8 fine ones
    assert per_fine_voxel == 8 * 64 * 32
    assert per_fine_voxel / (conv.weight.numel() + transposed.weight.numel() / 8) == pytest.approx(16 / 29)


def test_unsupported_pairs_are_refused():
    transposed, conv = pair(3, (2, 2, 2), 3, up_bias=True)  # a bias is not zero in the padded border
    assert not UpsampledConv.supports(transposed, conv)
    with pytest.raises(ValueError, match="cannot fold"):
        UpsampledConv(transposed, conv)
    strided = nn.Conv3d(4, 5, 3, stride=2, padding=1)
    assert not UpsampledConv.supports(pair(3, 2, 3)[0], strided)


@pytest.mark.parametrize("strides", [[1, 2, 2], [1, (2, 2, 1), 2]])
def test_optimized_plain_unet_folds_every_level(strides):
    kernels = [3, (3, 3, 1), 3] if strides[1] == (2, 2, 1) else 3
    net = PlainUNet(features=(8, 16, 32), strides=strides, kernel_sizes=kernels, out_channels=3).eval()
    fast = optimize_for_inference(net)
    assert isinstance(fast.decoder, ConcatFreeUNetDecoder)
    assert all(isinstance(up, nn.Identity) for up in fast.decoder.ups)
    assert all(isinstance(first.conv_a, UpsampledConv) for first in fast.decoder.firsts)
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), atol=1e-4, rtol=1e-4)
    unfolded = optimize_for_inference(net, fold_upsampling=False)
    assert not any(isinstance(m, UpsampledConv) for m in unfolded.modules())
