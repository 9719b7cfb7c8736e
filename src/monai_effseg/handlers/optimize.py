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

from monai_effseg.deploy.optimize import optimize_for_inference

logger = logging.getLogger(__name__)


class OptimizeForInference:
    """Run an evaluator on ``optimize_for_inference(engine.network, **options)``; nothing when not ``enabled``.

    On a CPU network every step applies. Elsewhere (CUDA) only the device-independent ones (BatchNorm folding,
    concat-free decoder, polyphase upsampling): oneDNN is CPU-only, and the bundles leave this off on CUDA, where its
    effect has not been measured.
    """

    def __init__(self, enabled: bool = True, **options: Any) -> None:
        self.enabled = bool(enabled)
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
        if any(p.device.type != "cpu" for p in network.parameters()):
            options["channels_last"] = False
        engine.network = optimize_for_inference(network, **options)
        self.eager = network
        logger.info("inference runs optimize_for_inference's network (optimize=false runs the eager one)")

    def restore(self, engine: Engine) -> None:
        if self.eager is not None:
            engine.network, self.eager = self.eager, None
