"""monai-effseg: efficient 3D networks for kidney and liver tumour segmentation in CT, as MONAI bundles."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "blocks", "cli", "data", "decoders", "encoders", "handlers", "inferers", "losses", "metrics", "nets", "optim",
    "profile", "pruning", "registry", "training", "transforms", "utils", "visualize", "workflows",
)  # fmt: skip


def __getattr__(name: str):
    # Bundle configs write `$monai_effseg.workflows.evaluate_holdout(...)`: MONAI evaluates that against the modules
    # the config's "imports" loaded, so a submodule that no import pulled in must load on first access (PEP 562).
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES))
