"""Input checks for CT images and label maps: every problem is named with its file, and all problems of a dataset are
reported together in one :class:`DataValidationError`, before any training starts.

Rules (``check_*`` functions return a list of problem strings; an empty list means the input is usable):

* readable: the file exists, is not empty, and decompresses completely (a truncated ``.nii.gz`` raises in nibabel).
* 3D: exactly three spatial axes of length >= 2 after dropping trailing singleton axes, so a ``(x, y, 1)`` slice or a
  multi-frame 4D series is rejected.
* finite: no NaN or inf anywhere.
* CT in Hounsfield units (images only):

  - ``min >= HU_FLOOR`` (-3072): scanners pad outside the field of view with -1024, -2048, -3024 or -3072;
    anything lower is not a CT value.
  - ``max <= HU_CEIL`` (32767): the int16 ceiling that extended-HU reconstructions saturate at.
  - ``max > 1``: a maximum of 1 or less means the volume was already normalised (e.g. to [0, 1]).
  - ``min < 0``: air (-1000) and fat (-100) are negative in HU; no negative voxel means raw scanner values without
    the rescale intercept, or another modality.
  - ``max - min >= HU_MIN_RANGE`` (100): a z-scored or otherwise rescaled volume spans a few units only.

* label maps: integer values in ``[0, num_classes - 1]``.
* image/label pairs: the same spatial shape, and affines equal within ``AFFINE_ATOL`` (1e-3 mm, far above the float32
  rounding of NIfTI headers and far below any real misregistration).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

__all__ = [
    "AFFINE_ATOL",
    "HU_CEIL",
    "HU_FLOOR",
    "HU_MIN_RANGE",
    "DataValidationError",
    "EmptyFileError",
    "check_ct_intensities",
    "check_geometry",
    "check_label_values",
    "check_volume_shape",
    "label_values_present",
    "load_checked_case",
    "read_volume",
    "validate_case",
    "validate_datalist",
    "validate_image",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

HU_FLOOR = -3072.0
HU_CEIL = 32767.0
HU_MIN_RANGE = 100.0
AFFINE_ATOL = 1e-3


class DataValidationError(ValueError):
    """One or more input files are unusable. ``problems`` holds one ``"<file>: <problem>"`` line per problem."""

    def __init__(self, problems: Sequence[str], what: str = "input data"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) found in the {what}:\n{lines}")


class EmptyFileError(ValueError):
    """A 0-byte image file (an interrupted copy or download)."""


def read_volume(path: PathLike, dtype: Any = np.float32) -> MetaTensor:
    """Read one image with MONAI's ``LoadImage`` (NIfTI via nibabel; NRRD, MHA and DICOM-series folders via ITK).

    The returned affine is in RAS world coordinates for every reader. Raises ``FileNotFoundError`` for a missing
    path and ``ValueError`` for an empty file; other reader errors are passed through.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise EmptyFileError(f"{path} is an empty file (0 bytes)")
    return LoadImage(image_only=True, dtype=dtype)(str(path))


def _describe_read_error(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return "does not exist"
    if isinstance(err, EmptyFileError):
        return "empty file (0 bytes)"
    if isinstance(err, EOFError) or "end-of-stream" in str(err) or "zlib" in str(err).lower():
        return f"unreadable: truncated or corrupt compressed file ({type(err).__name__}: {err})"
    return f"unreadable ({type(err).__name__}: {err})"


def _try_read(path: PathLike, dtype: Any, problems: list[str]) -> Optional[MetaTensor]:
    try:
        return read_volume(path, dtype=dtype)
    except Exception as err:  # noqa: BLE001 - any reader failure is reported against the file, never raised alone
        problems.append(f"{path}: {_describe_read_error(err)}")
        return None


def _spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_volume_shape(shape: Sequence[int], path: PathLike) -> list[str]:
    """A usable volume has three spatial axes, each of length >= 2 (trailing singleton axes are ignored)."""
    spatial = _spatial_shape(shape)
    if len(spatial) < 3 or min(spatial) < 2:
        return [f"{path}: 2D image (shape {tuple(shape)}); expected a 3D volume"]
    if len(spatial) > 3:
        return [f"{path}: {len(spatial)}D image (shape {tuple(shape)}); expected a single 3D volume"]
    return []


def _as_numpy(array: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _check_finite(values: np.ndarray, path: PathLike) -> list[str]:
    if np.issubdtype(values.dtype, np.integer):
        return []
    finite = np.isfinite(values)
    if finite.all():
        return []
    n_nan = int(np.isnan(values).sum())
    n_inf = int(values.size - finite.sum() - n_nan)
    return [f"{path}: contains non-finite values ({n_nan} NaN, {n_inf} inf)"]


def check_ct_intensities(image: Union[np.ndarray, torch.Tensor], path: PathLike) -> list[str]:
    """Checks that ``image`` is finite and plausible as a CT in Hounsfield units (rules in the module docstring)."""
    values = _as_numpy(image)
    problems = _check_finite(values, path)
    if problems:
        return problems
    lo, hi = float(values.min()), float(values.max())
    seen = f"intensity range [{lo:g}, {hi:g}]"
    if lo < HU_FLOOR:
        problems.append(f"{path}: {seen} goes below {HU_FLOOR:g}, the lowest CT padding value; not Hounsfield units")
    if hi > HU_CEIL:
        problems.append(f"{path}: {seen} exceeds {HU_CEIL:g}, the int16 ceiling of CT; not Hounsfield units")
    if hi <= 1.0:
        problems.append(f"{path}: {seen} has max <= 1: the volume looks already normalised, expected raw HU")
    elif lo >= 0.0:
        problems.append(
            f"{path}: {seen} has no negative value (air is -1000 HU): raw scanner values without the rescale "
            "intercept, or not a CT"
        )
    elif hi - lo < HU_MIN_RANGE:
        problems.append(f"{path}: {seen} spans less than {HU_MIN_RANGE:g} HU: the volume looks rescaled, expected HU")
    return problems


def label_values_present(label: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """Sorted distinct integer values of a label map (a histogram, linear in the number of voxels, unlike a sort)."""
    values = _as_numpy(label).astype(np.int64, copy=False).ravel()
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = int(values.min()), int(values.max())
    if high - low > 65535:  # not a label map; a histogram would be huge
        return np.unique(values)
    return np.flatnonzero(np.bincount(values - low)) + low


def check_label_values(
    label: Union[np.ndarray, torch.Tensor], path: PathLike, num_classes: Optional[int] = None
) -> list[str]:
    """Checks that a label map holds integers in ``[0, num_classes - 1]`` (any non-negative integer when ``None``)."""
    values = _as_numpy(label)
    problems = _check_finite(values, path)
    if problems:
        return problems
    as_int = values.astype(np.int64)
    fractional = values != as_int
    if fractional.any():
        problems.append(f"{path}: label map has non-integer values {np.unique(values[fractional])[:5].tolist()}")
    uniques = label_values_present(as_int)
    high = num_classes - 1 if num_classes is not None else None
    bad = uniques[(uniques < 0) | ((uniques > high) if high is not None else False)]
    if bad.size:
        allowed = f"0..{high}" if high is not None else "non-negative integers"
        problems.append(f"{path}: label values {bad[:10].tolist()} outside the class range {allowed}")
    return problems


def check_geometry(
    image: MetaTensor, label: MetaTensor, image_path: PathLike, label_path: PathLike, atol: float = AFFINE_ATOL
) -> list[str]:
    """Checks that an image and its label share the spatial shape and (within ``atol`` mm) the affine."""
    image_shape, label_shape = _spatial_shape(image.shape), _spatial_shape(label.shape)
    if image_shape != label_shape:
        return [f"{label_path}: shape {label_shape} differs from its image {image_path} with shape {image_shape}"]
    image_affine = _as_numpy(image.affine).astype(np.float64)
    label_affine = _as_numpy(label.affine).astype(np.float64)
    diff = float(np.abs(image_affine - label_affine).max())
    if diff > atol:
        return [
            f"{label_path}: affine differs from its image {image_path} by up to {diff:.4g} mm "
            f"(tolerance {atol:g}); label affine {np.round(label_affine[:3], 4).tolist()}, "
            f"image affine {np.round(image_affine[:3], 4).tolist()}"
        ]
    return []


def validate_image(path: PathLike) -> list[str]:
    """Problems of one CT image on its own: readable, 3D, finite, HU range. Used for inference inputs."""
    problems: list[str] = []
    image = _try_read(path, np.float32, problems)
    if image is not None:
        problems += check_volume_shape(image.shape, path)
        if not problems:
            problems += check_ct_intensities(image, path)
    return problems


def load_checked_case(
    item: Mapping[str, Any], num_classes: Optional[int] = None, image_key: str = "image", label_key: str = "label"
) -> tuple[Optional[MetaTensor], Optional[MetaTensor], list[str]]:
    """Loads ``item[image_key]`` and (if present) ``item[label_key]`` and runs every check on them.

    Returns ``(image, label, problems)``; ``image``/``label`` are ``None`` when unreadable. The fingerprint uses this
    so that each file is read once for both validation and statistics.
    """
    problems: list[str] = []
    image_path = item[image_key]
    image = _try_read(image_path, np.float32, problems)
    if image is not None:
        shape_problems = check_volume_shape(image.shape, image_path)
        problems += shape_problems or check_ct_intensities(image, image_path)
    label = None
    label_path = item.get(label_key)
    if label_path is not None:
        label = _try_read(label_path, np.float32, problems)
        if label is not None:
            shape_problems = check_volume_shape(label.shape, label_path)
            problems += shape_problems or check_label_values(label, label_path, num_classes)
            if image is not None and not shape_problems:
                problems += check_geometry(image, label, image_path, label_path)
    return image, label, problems


def validate_case(item: Mapping[str, Any], num_classes: Optional[int] = None) -> list[str]:
    """All problems of one datalist item ``{"image": ..., "label": ...}``; an empty list means it is usable."""
    return load_checked_case(item, num_classes)[2]


def validate_datalist(items: Iterable[Mapping[str, Any]], num_classes: Optional[int] = None) -> None:
    """Validates every case and raises one :class:`DataValidationError` listing all problems, if any."""
    problems: list[str] = []
    for item in items:
        problems += validate_case(item, num_classes)
    if problems:
        raise DataValidationError(problems, "dataset")
