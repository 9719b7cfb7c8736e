"""monai-effseg: efficient 3D networks for kidney and liver tumour segmentation in CT, as MONAI bundles."""

from __future__ import annotations

import importlib
import pkgutil

__version__ = "0.1.0"


def __getattr__(name: str):
    # Bundle configs write `$monai_effseg.workflows.evaluate_holdout(...)`: MONAI evaluates that against the modules
    # the config's "imports" loaded, so a submodule that no import pulled in must load on first access (PEP 562).
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise  # the submodule exists but one of its own imports is missing
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(list(globals()) + [m.name for m in pkgutil.iter_modules(__path__)])
