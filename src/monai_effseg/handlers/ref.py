"""A handler defined under another config key, listed in ``train#handlers`` as a dict entry."""

from __future__ import annotations

from typing import Any

__all__ = ["handler_ref"]


def handler_ref(handler: Any) -> Any:
    """Return ``handler`` unchanged.

    A bundle that needs a handler under a name of its own (``"sauron#pruner"``, referenced by other components) lists
    it in ``train#handlers`` as ``{"_target_": "monai_effseg.handlers.handler_ref", "handler": "@sauron#pruner"}``
    rather than as the bare string ``"@sauron#pruner"`` or by position (``"@train#handlers#1"``): MONAI Label's
    bundle train task inserts a ``CheckpointLoader`` at the head of ``train#handlers`` (shifting every position) and
    reads ``_target_`` of each entry (failing on a string).
    """
    return handler
