"""CT preprocessing from a dataset fingerprint, built from MONAI transforms so ``Invertd`` can undo the geometry.

nnU-Net's CT normalisation (clip to the foreground 0.5/99.5 percentiles, subtract the foreground mean, divide by the
foreground std) is a linear map followed by a clip, i.e. exactly one ``ScaleIntensityRanged`` with
``b_min = (a_min - mean) / std`` and ``b_max = (a_max - mean) / std``; the fixed windows of Sauron
(clip [-79, 304], ``(x - 101) / 76.9``) and LiTS (clip [-200, 200], min-max to [0, 1]) are the same map with other
numbers. Intensity transforms are not tracked by ``Invertd`` and need no inverse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, LoadImaged, Orientationd, ScaleIntensityRanged

from monai_effseg.data.fingerprint import DEFAULT_FINGERPRINTS, intensity_normalization, load_fingerprint
from monai_effseg.transforms.spatial import SafeSpacingd

__all__ = ["RAS_LABELS", "CTNormalized", "as_fingerprint", "ct_preprocessing", "fixed_ct_normalize"]

FingerprintLike = Union[Mapping[str, Any], str, "os.PathLike[str]"]

# Explicit axis labels keep Orientationd's meaning identical on monai 1.5 and 1.6 (1.6 warns when they are implicit).
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def as_fingerprint(fingerprint: FingerprintLike) -> Mapping[str, Any]:
    """A fingerprint dict from a dict, a JSON path, or a name in ``DEFAULT_FINGERPRINTS`` (``"kits19"``, ``"lits"``)."""
    if isinstance(fingerprint, Mapping):
        return fingerprint
    if isinstance(fingerprint, str) and fingerprint in DEFAULT_FINGERPRINTS:
        return load_fingerprint(None, default=fingerprint)
    return load_fingerprint(Path(fingerprint))


def fixed_ct_normalize(
    keys: KeysCollection,
    a_min: float,
    a_max: float,
    subtrahend: float,
    divisor: float,
    dtype: Any = np.float32,
    allow_missing_keys: bool = False,
) -> ScaleIntensityRanged:
    """Clip to ``[a_min, a_max]``, then ``(x - subtrahend) / divisor``.

    Sauron: ``fixed_ct_normalize("image", -79, 304, 101, 76.9)``; LiTS (Tustumi), min-max to [0, 1]:
    ``fixed_ct_normalize("image", -200, 200, -200, 400)``.
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be positive, got {divisor}")
    return ScaleIntensityRanged(
        keys,
        a_min=a_min,
        a_max=a_max,
        b_min=(a_min - subtrahend) / divisor,
        b_max=(a_max - subtrahend) / divisor,
        clip=True,
        dtype=dtype,
        allow_missing_keys=allow_missing_keys,
    )


class CTNormalized(ScaleIntensityRanged):
    """nnU-Net CT normalisation from a fingerprint: clip to the foreground [p0.5, p99.5], z-score by the foreground
    mean and std (or the fingerprint's fixed ``"normalization"`` window, e.g. LiTS' [-200, 200] -> [0, 1]).

    Args:
        keys: image key(s).
        fingerprint: a fingerprint dict, a fingerprint JSON path, or a default name (``"kits19"``, ``"lits"``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        fingerprint: FingerprintLike,
        dtype: Any = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        params = intensity_normalization(as_fingerprint(fingerprint))
        self.normalization = params
        divisor = params["divisor"]
        super().__init__(
            keys,
            a_min=params["a_min"],
            a_max=params["a_max"],
            b_min=(params["a_min"] - params["subtrahend"]) / divisor,
            b_max=(params["a_max"] - params["subtrahend"]) / divisor,
            clip=True,
            dtype=dtype,
            allow_missing_keys=allow_missing_keys,
        )


def ct_preprocessing(
    fingerprint: FingerprintLike,
    keys: Sequence[str] = ("image", "label"),
    image_only: bool = False,
    spacing_mode: Union[str, int] = "bilinear",
    spacing: Optional[Sequence[float]] = None,
    load: bool = True,
    allow_missing_keys: bool = False,
) -> Compose:
    """Deterministic CT preprocessing: load, reorient to RAS, resample to the fingerprint spacing, normalise.

    ``LoadImaged(ensure_channel_first)`` -> ``Orientationd("RAS")`` -> ``Spacingd(fingerprint["spacing"])`` ->
    :class:`CTNormalized` -> ``EnsureTyped``. Every geometric step is invertible: for a prediction ``pred`` made on
    the output, ``Invertd("pred", transform=<this Compose>, orig_keys=keys[0], nearest_interp=True)`` returns it to the
    input's exact shape, affine and orientation.

    Args:
        fingerprint: dict, JSON path, or default name (see :func:`as_fingerprint`). Its ``"spacing"`` is in RAS order.
        keys: the image key first, then label keys (resampled with nearest neighbour).
        image_only: process ``keys[0]`` only (inference, where there is no label).
        spacing_mode: image interpolation of ``Spacingd``: ``"bilinear"`` (default), ``"nearest"``, or an integer
            spline order (``3`` is nnU-Net's and Hao's third-order spline; slower).
        spacing: target spacing (RAS order) overriding the fingerprint's; when both are ``None`` nothing is resampled.
        load: include ``LoadImaged`` (``False`` when the data are already channel-first MetaTensors).
        allow_missing_keys: passed to every transform (e.g. a datalist where only some cases have labels).
    """
    fingerprint = as_fingerprint(fingerprint)
    keys = list(keys[:1] if image_only else keys)
    image_key = keys[0]
    target = spacing if spacing is not None else fingerprint.get("spacing")
    common = {"allow_missing_keys": allow_missing_keys}
    transforms: list[Any] = []
    if load:
        transforms.append(LoadImaged(keys, ensure_channel_first=True, image_only=True, **common))
    transforms.append(Orientationd(keys, axcodes="RAS", labels=RAS_LABELS, **common))
    if target is not None:
        modes = [spacing_mode] + ["nearest"] * (len(keys) - 1)
        # SafeSpacingd: monai 1.6's Spacingd breaks on MONAI Label's string ``image_path`` entry. float32 resampling
        # (MONAI's default is float64): inverting a 512 x 512 x 600 CT's class scores peaked at 10.7 GB in float64
        # (the sampling grid is a 3-vector per output voxel) and 5.3 GB in float32 (bench_postprocess_memory.py)
        transforms.append(SafeSpacingd(keys, pixdim=[float(s) for s in target], mode=modes, dtype=np.float32, **common))
    transforms.append(CTNormalized(image_key, fingerprint, **common))
    transforms.append(EnsureTyped(keys, **common))
    return Compose(transforms)
