"""Deployment: exact CPU fast paths for the zoo's networks, kept apart from the network definitions.

:func:`optimize_for_inference` returns a network that computes the same segmentation faster on a CPU (BatchNorm
folded, oneDNN convolutions with fused activations and residuals in channels-last, nnU-Net decoders without
concatenation, transposed convs folded into the next conv by :class:`UpsampledConv`, InstanceNorm + activation in
place and chunked, the FullyEfficient decoder's MBConv blocks by :class:`InstanceNormMBConv`; optionally in bfloat16
on CPUs with native bf16 instructions, :func:`native_bf16`). Bundles apply it through
:class:`monai_effseg.handlers.OptimizeForInference`.
"""

from monai_effseg.deploy.mbconv import InstanceNormMBConv
from monai_effseg.deploy.optimize import keep_freed_memory, native_bf16, optimize_for_inference
from monai_effseg.deploy.polyphase import UpsampledConv

__all__ = ["InstanceNormMBConv", "UpsampledConv", "keep_freed_memory", "native_bf16", "optimize_for_inference"]
