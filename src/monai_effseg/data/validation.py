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
  - not constant (a blank volume is named as such).
  - inference inputs only (:func:`validate_image`): at least ``AIR_MIN_FRACTION`` (0.1%) of the voxels below
    ``AIR_HU`` (-500): a CT has air around the body; an MR or a crop without air has none.

* DICOM (inference inputs): a series folder has evenly spaced slices (a missing slice is refused, ITK would read it
  with a wrong uniform spacing); a single ``.dcm`` file is refused with the advice to pass its series folder.

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

from monai_effseg.utils import as_numpy

__all__ = [
    "AFFINE_ATOL",
    "HU_CEIL",
    "HU_FLOOR",
    "HU_MIN_RANGE",
    "DataValidationError",
    "EmptyFileError",
    "check_ct_air",
    "check_ct_intensities",
    "check_against_fingerprint",
    "check_dicom_series",
    "check_geometry",
    "check_label_values",
    "check_volume_shape",
    "is_dicom_file",
    "label_values_present",
    "load_checked_case",
    "inspect_image",
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
AIR_HU = -500.0  # between air (-1000) and fat (-100)
AIR_MIN_FRACTION = 0.001
DICOM_STEP_RTOL = 0.1
FOV_MIN_FRACTION = 0.3
FOV_MIN_MM = 100.0
SPACING_MAX_RATIO = 3.0


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


def _describe_read_error(err: BaseException, path: PathLike) -> str:
    if isinstance(err, FileNotFoundError) and not Path(path).exists():
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
        problems.append(f"{path}: {_describe_read_error(err, path)}")
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
    values = as_numpy(image)
    problems = _check_finite(values, path)
    if problems:
        return problems
    lo, hi = float(values.min()), float(values.max())
    seen = f"intensity range [{lo:g}, {hi:g}]"
    if lo == hi:
        return [f"{path}: every voxel is {lo:g}: a blank (constant) volume, not a CT scan"]
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
    values = as_numpy(label).astype(np.int64, copy=False).ravel()
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
    values = as_numpy(label)
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
    image_affine = as_numpy(image.affine).astype(np.float64)
    label_affine = as_numpy(label.affine).astype(np.float64)
    diff = float(np.abs(image_affine - label_affine).max())
    if diff > atol:
        return [
            f"{label_path}: affine differs from its image {image_path} by up to {diff:.4g} mm "
            f"(tolerance {atol:g}); label affine {np.round(label_affine[:3], 4).tolist()}, "
            f"image affine {np.round(image_affine[:3], 4).tolist()}"
        ]
    return []


def check_ct_air(image: Union[np.ndarray, torch.Tensor], path: PathLike) -> list[str]:
    """A CT of the abdomen has air (-1000 HU) around the body, or scanner padding below it, in at least
    ``AIR_MIN_FRACTION`` of its voxels; an MR (e.g. values -47..833) or a crop with no air passes the plain range
    checks but has none. The count of voxels below ``AIR_HU`` is robust to a few outliers, unlike the minimum."""
    values = as_numpy(image)
    fraction = float(np.count_nonzero(values < AIR_HU)) / max(values.size, 1)
    if fraction >= AIR_MIN_FRACTION:
        return []
    return [
        f"{path}: only {fraction:.2%} of the voxels are below {AIR_HU:g} HU (intensity range "
        f"[{float(values.min()):g}, {float(values.max()):g}]); a CT has air at -1000 HU around the body: this looks "
        "like another modality (MR?) or a crop without air, which these CT models cannot segment; pass the whole "
        "CT volume in Hounsfield units"
    ]


def is_dicom_file(path: Path) -> bool:
    """``True`` for a DICOM Part 10 file (the ``DICM`` magic at byte 128), whatever its extension."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def dicom_series_files(folder: PathLike) -> list[str]:
    """The files of the first DICOM series in ``folder``, in slice order, chosen exactly as MONAI's ``ITKReader``
    chooses them (GDCM series details, restricted by series date)."""
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")
    names.SetDirectory(str(folder))
    uids = names.GetSeriesUIDs()
    return list(names.GetFileNames(uids[0])) if uids else []


def check_dicom_series(folder: PathLike) -> list[str]:
    """A DICOM series must have evenly spaced slices: ITK reads a series with a missing slice with one uniform
    spacing (and only prints a raw warning), which shifts every slice after the gap."""
    import itk

    files = dicom_series_files(folder)
    if len(files) < 2:
        return []
    positions, normal = [], None
    for name in files:
        io = itk.GDCMImageIO.New()
        io.SetFileName(name)
        io.ReadImageInformation()
        positions.append([io.GetOrigin(i) for i in range(3)])
        if normal is None:
            normal = np.asarray(io.GetDirection(2), dtype=np.float64)
    along = np.sort(np.asarray(positions, dtype=np.float64) @ normal)
    steps = np.diff(along)
    step = float(np.median(steps))
    if step <= 0:
        return [f"{folder}: DICOM series has several slices at the same position; export one series per folder"]
    uneven = np.flatnonzero(np.abs(steps - step) > DICOM_STEP_RTOL * step)
    if uneven.size == 0:
        return []
    k = int(uneven[np.argmax(steps[uneven])])
    return [
        f"{folder}: DICOM series slices are unevenly spaced: {uneven.size} gap(s), the largest "
        f"{float(steps[k]):.3g} mm after slice {k + 1} of {len(files)}, where the spacing is {step:.3g} mm elsewhere; "
        "slices are missing, and reading it would give every slice after the gap a wrong position: export the "
        "complete series"
    ]


def _ras_geometry(image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
    """``(spacing, shape)`` of a volume along the world axes x, y, z (RAS), the fingerprint's axis order."""
    affine = as_numpy(image.affine).astype(np.float64)[:3, :3]
    zooms = np.sqrt((affine**2).sum(axis=0))
    shape = np.asarray(_spatial_shape(image.shape)[:3], dtype=np.float64)
    order = np.argmax(np.abs(affine), axis=0)  # the world axis each array axis runs along
    if sorted(order.tolist()) != [0, 1, 2]:  # strongly oblique: keep the array order
        return zooms, shape
    spacing, extent = np.empty(3), np.empty(3)
    spacing[order], extent[order] = zooms, shape
    return spacing, extent


def check_against_fingerprint(image: MetaTensor, path: PathLike, fingerprint: Optional[Mapping[str, Any]]) -> list[str]:
    """Warnings (not refusals) for a volume whose spacing or field of view is far from the training data: the
    in-plane field of view below ``FOV_MIN_FRACTION`` of the training one (or below ``FOV_MIN_MM`` when the
    fingerprint does not give it), or a spacing more than ``SPACING_MAX_RATIO`` times finer or coarser in-plane (4x
    coarser through-plane; thin slices are common and harmless)."""
    target = (fingerprint or {}).get("spacing")
    if not target:
        return []
    target = np.asarray(target, dtype=np.float64)
    spacing, shape = _ras_geometry(image)
    fov = spacing * shape
    median_shape = fingerprint.get("median_shape")
    train_fov = np.asarray(median_shape, dtype=np.float64) * target if median_shape else None
    reasons = []
    for axis, name in ((0, "x"), (1, "y")):
        floor = FOV_MIN_FRACTION * train_fov[axis] if train_fov is not None else FOV_MIN_MM
        if fov[axis] < floor:
            reasons.append(f"the field of view along {name} is {fov[axis]:.3g} mm, under {floor:.3g} mm")
        ratio = spacing[axis] / target[axis]
        if not 1 / SPACING_MAX_RATIO <= ratio <= SPACING_MAX_RATIO:
            reasons.append(f"the spacing along {name} is {ratio:.2g} times the training spacing")
    if spacing[2] / target[2] > 4:
        reasons.append(f"the slices are {spacing[2] / target[2]:.2g} times thicker than in training")
    if not reasons:
        return []
    trained = f"training spacing {_mm(target)} mm" + (
        f", field of view {_mm(train_fov, 0)} mm" if train_fov is not None else ""
    )
    return [
        f"{path}: spacing {_mm(spacing)} mm, field of view {_mm(fov, 0)} mm (x, y, z) is far from the training data "
        f"({trained}): {'; '.join(reasons)}; the segmentation is unreliable: check that this is a whole abdominal CT"
    ]


def _mm(values: np.ndarray, digits: int = 3) -> str:
    return "(" + ", ".join(f"{v:.{digits}g}" if digits else f"{v:.0f}" for v in values) + ")"


def inspect_image(path: PathLike, fingerprint: Optional[Mapping[str, Any]] = None) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of one inference input: problems (see :func:`validate_image`) make it unusable;
    warnings (spacing or field of view far from ``fingerprint``'s, see :func:`check_against_fingerprint`) do not."""
    problems: list[str] = []
    path_obj = Path(path)
    if path_obj.is_file() and is_dicom_file(path_obj):
        return [
            f"{path}: a single DICOM file is one slice; pass the folder that holds the whole series "
            f"(--input_dir {path_obj.parent})"
        ], []
    dicom_files = [f for f in path_obj.iterdir() if f.is_file() and is_dicom_file(f)] if path_obj.is_dir() else []
    if len(dicom_files) == 1:
        return [
            f"{path}: holds a single DICOM file ({dicom_files[0].name}), i.e. one slice: a CT series has one file per "
            "slice; copy the whole series into this folder (or pass the folder that holds it)"
        ], []
    image = _try_read(path, np.float32, problems)
    if image is not None:
        problems += check_volume_shape(image.shape, path)
        if not problems:
            problems += check_ct_intensities(image, path)
        if not problems:
            problems += check_ct_air(image, path)
        if not problems and path_obj.is_dir():
            problems += check_dicom_series(path_obj)
        if not problems:
            return [], check_against_fingerprint(image, path, fingerprint)
    return problems, []


def validate_image(path: PathLike) -> list[str]:
    """Problems of one CT image on its own: readable, 3D, finite, HU range, air present (no MR), and for a DICOM
    series evenly spaced slices (a single ``.dcm`` file is refused). Used for inference inputs."""
    return inspect_image(path)[0]


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
