"""Spatial dictionary transforms that behave the same on monai 1.5 and 1.6 whatever else the data dict carries."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Optional

from monai.transforms import Spacingd

__all__ = ["SafeSpacingd"]


class SafeSpacingd(Spacingd):
    """``monai.transforms.Spacingd`` that leaves entries named ``"<key>_*"`` alone unless they are meta dicts.

    For NIfTI inputs, monai 1.6's ``Spacingd`` copies the resampled meta data into *every* entry whose name starts
    with ``"<key>_"``, assuming each is a ``<key>_meta_dict``. MONAI Label's inference tasks put the input's path
    under ``"image_path"`` (a ``str``), so a plain ``Spacingd(keys="image")`` fails there with ``AttributeError:
    'str' object has no attribute 'update'`` (monai 1.5 had no such loop). This subclass sets the non-mapping
    ``"<key>_*"`` entries aside for the call and puts them back unchanged; everything else, the inverse included, is
    ``Spacingd``'s own.
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: Optional[bool] = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys if isinstance(key, str))
        aside = {
            k: v
            for k, v in d.items()
            if isinstance(k, str) and prefixes and k.startswith(prefixes) and not isinstance(v, Mapping)
        }
        for k in aside:
            del d[k]
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out
