"""SiLU (= Swish-1, Ramachandran et al. 2017) in MONAI's ``Act`` factory, as ``("silu", {"inplace": True})``.

MONAI only has its own ``Swish`` (``x * sigmoid(alpha * x)``: two passes and an extra tensor) and ``MemoryEfficientSwish``
(an autograd Function that TorchScript cannot script); ``torch.nn.SiLU`` is one fused kernel and can run in place.
"""

from __future__ import annotations

from monai.networks.layers.factories import Act
from torch import nn

if "SILU" not in Act.names:  # another module may have registered it first

    @Act.factory_function("silu")
    def silu_factory() -> type[nn.SiLU]:
        return nn.SiLU


EFFICIENTNET_ACT: tuple = ("silu", {"inplace": True})
"""The activation of EfficientNet (Tan & Le 2019) and EfficientNetV2 (Tan & Le 2021)."""

EFFICIENTNET_NORM: tuple = ("batch", {"eps": 1e-3})
"""BatchNorm as in the TensorFlow reference (eps 1e-3); PyTorch's momentum 0.1 (TF's 0.99 decay equals 0.01) so that the
running statistics settle within the short schedules of the demo."""

FULLY_EFFICIENT_NORM: tuple = ("instance", {"affine": True, "eps": 1e-5})
"""The FullyEfficient decoder keeps nnU-Net's InstanceNorm (batch 2 of 128^3 patches) with the MBConv's SiLU."""
