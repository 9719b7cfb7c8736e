"""Bundle inference on :func:`~monai_effseg.deploy.optimize.optimize_for_inference`'s network (BN folding, oneDNN
convs, concat-free decoder, polyphase upsampling): same segmentation, faster on the CPU.

The bundles' ``inference.json`` lists :class:`OptimizeForInference` among the evaluator's handlers with
``"enabled": "@optimize"``; ``--optimize false`` runs the eager network. The optimized copy is built when the
evaluator's epoch starts, after ``CheckpointLoader`` (``Events.STARTED``) loaded the weights into ``@network``
(BatchNorm folding reads them), and ``engine.network`` is set back to ``@network`` when the run completes.
``@network`` itself is never changed, so whatever else holds it (MONAI Label loads ``network_def`` and
``models/model.pt`` itself, checkpoint savers) sees the eager network.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from ignite.engine import Engine, Events

from monai_effseg.deploy.optimize import native_bf16, optimize_for_inference

logger = logging.getLogger(__name__)


def runs_in_bf16(bf16_where_native: bool, on_cpu: bool = True) -> bool:
    """The rule :class:`OptimizeForInference` applies: bfloat16 where asked for, on a CPU network, on a CPU with
    native bf16 dot products (:func:`~monai_effseg.deploy.optimize.native_bf16`)."""
    return bool(bf16_where_native) and on_cpu and native_bf16() is not None


class OptimizeForInference:
    """Run an evaluator on ``optimize_for_inference(engine.network, **options)``; nothing when not ``enabled``.

    On a CPU network every step applies. Elsewhere (CUDA) only the device-independent ones (BatchNorm folding,
    concat-free decoder, polyphase upsampling): oneDNN is CPU-only, and the bundles leave this off on CUDA, where its
    effect has not been measured. ``bf16_where_native``: bfloat16 weights and activations where the network is on a CPU
    with native bf16 dot products (:func:`~monai_effseg.deploy.optimize.native_bf16`: AMX or AVX-512 BF16), float32
    elsewhere (oneDNN would emulate bf16 there); the fast CPU overlays set it for the bundles whose accuracy
    check passed.
    """

    def __init__(self, enabled: bool = True, bf16_where_native: bool = False, **options: Any) -> None:
        self.enabled = bool(enabled)
        self.bf16_where_native = bool(bf16_where_native)
        self.options = options
        self.eager: Optional[torch.nn.Module] = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self.optimize)
        engine.add_event_handler(Events.COMPLETED, self.restore)

    def optimize(self, engine: Engine) -> None:
        if self.eager is not None:  # a later epoch of the same run: already optimized
            return
        network = engine.network
        options = dict(self.options)
        on_cpu = all(p.device.type == "cpu" for p in network.parameters())
        if not on_cpu:
            options["channels_last"] = False
        options["bf16"] = runs_in_bf16(self.bf16_where_native, on_cpu)
        engine.network = optimize_for_inference(network, **options)
        self.eager = network
        precision = f"bfloat16 ({native_bf16()})" if options["bf16"] else "float32"
        if self.bf16_where_native and not options["bf16"]:
            precision += " (bf16_where_native is set, but the network is not on a CPU with AMX or AVX-512 BF16)"
        logger.info(
            f"inference runs optimize_for_inference's network in {precision} (optimize=false runs the eager one)"
        )

    def restore(self, engine: Engine) -> None:
        if self.eager is not None:
            engine.network, self.eager = self.eager, None
