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

from monai_effseg.deploy.optimize import cpu_has_amx, optimize_for_inference

logger = logging.getLogger(__name__)


def runs_in_bf16(bf16_on_amx: bool, on_cpu: bool = True) -> bool:
    """The rule :class:`OptimizeForInference` applies: bfloat16 where asked for, on a CPU network, on a CPU with AMX
    tiles (:func:`~monai_effseg.deploy.optimize.cpu_has_amx`)."""
    return bool(bf16_on_amx) and on_cpu and cpu_has_amx()


class OptimizeForInference:
    """Run an evaluator on ``optimize_for_inference(engine.network, **options)``; nothing when not ``enabled``.

    On a CPU network every step applies. Elsewhere (CUDA) only the device-independent ones (BatchNorm folding,
    concat-free decoder, polyphase upsampling): oneDNN is CPU-only, and the bundles leave this off on CUDA, where its
    effect has not been measured. ``bf16_on_amx``: bfloat16 weights and activations where the network is on a CPU
    with AMX tiles (:func:`~monai_effseg.deploy.optimize.cpu_has_amx`), float32 elsewhere (bf16 convs without AMX
    are not faster); the fast CPU overlays set it for the bundles whose accuracy check passed.
    """

    def __init__(self, enabled: bool = True, bf16_on_amx: bool = False, **options: Any) -> None:
        self.enabled = bool(enabled)
        self.bf16_on_amx = bool(bf16_on_amx)
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
        options["bf16"] = runs_in_bf16(self.bf16_on_amx, on_cpu)
        engine.network = optimize_for_inference(network, **options)
        self.eager = network
        precision = "bfloat16 on AMX" if options["bf16"] else "float32"
        if self.bf16_on_amx and not options["bf16"]:
            precision += " (bf16_on_amx is set, but the network is not on a CPU with AMX tiles)"
        logger.info(
            f"inference runs optimize_for_inference's network in {precision} (optimize=false runs the eager one)"
        )

    def restore(self, engine: Engine) -> None:
        if self.eager is not None:
            engine.network, self.eager = self.eager, None
