"""nnU-Net-style dataset fingerprint: target spacing, foreground intensity statistics, shapes and foreground boxes.

Axis convention: every per-axis value (``spacing``, ``median_shape``, ``foreground_bbox_max_*``, per-case ``spacing``
and ``shape``) is listed along the world axes x, y, z of RAS, i.e. in the array order a volume has after
``Orientation(axcodes="RAS")``. That is the order ``Spacing(pixdim=...)`` expects after ``Orientationd("RAS")``, so
``fingerprint["spacing"]`` can be passed as ``pixdim`` directly. (KiTS19 stores (z, y, x) arrays; its published
nnU-Net spacing 3.0 x 0.78 x 0.78 (z, y, x) is ``[0.78125, 0.78125, 3.0]`` here.)

Computing a fingerprint also validates every case (:mod:`monai_effseg.data.validation`) and raises one
:class:`~monai_effseg.data.validation.DataValidationError` naming every bad file.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Union

import nibabel as nib
import numpy as np

from monai_effseg.data.io import atomic_write_json
from monai_effseg.data.layouts import case_id_from_path
from monai_effseg.data.validation import DataValidationError, label_values_present, load_checked_case

__all__ = [
    "DEFAULT_FINGERPRINTS",
    "FINGERPRINT_VERSION",
    "compute_fingerprint",
    "intensity_normalization",
    "load_fingerprint",
    "load_or_compute_fingerprint",
    "with_case_ids",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Item = Mapping[str, Any]

FINGERPRINT_VERSION = 1
AXES = "RAS"

# Published values for inference without a training run. None marks a value the source does not give.
DEFAULT_FINGERPRINTS: dict[str, dict[str, Any]] = {
    "kits19": {
        "source": "nnU-Net KiTS19 3d_fullres plans (Isensee et al.), also used by Sauron (Valverde et al.)",
        "axes": AXES,
        "spacing": [0.78125, 0.78125, 3.0],
        "intensity": {"percentile_00_5": -79.0, "percentile_99_5": 304.0, "mean": 101.0, "std": 76.9, "median": None},
        "labels": [0, 1, 2],
        "num_cases": 210,
        "case_ids": None,
        "median_shape": None,
        "foreground_bbox_max_mm": None,
        "foreground_bbox_max_voxels": None,
    },
    "kits19_sauron": {
        "source": "Sauron (Valverde et al., their code): resample to (3.22, 1.62, 1.62) mm (z, y, x), clip [-79, 304], "
        "(x - 101) / 76.9",
        "axes": AXES,
        "spacing": [1.62, 1.62, 3.22],
        "intensity": {"percentile_00_5": -79.0, "percentile_99_5": 304.0, "mean": 101.0, "std": 76.9, "median": None},
        "labels": [0, 1, 2],
        "num_cases": 204,
        "case_ids": None,
        "median_shape": None,
        "foreground_bbox_max_mm": None,
        "foreground_bbox_max_voxels": None,
    },
    "lits": {
        "source": "Tustumi: clip HU to [-200, 200], then min-max to [0, 1]; no resampling (in-plane resize instead)",
        "axes": AXES,
        "spacing": None,
        "intensity": {"percentile_00_5": None, "percentile_99_5": None, "mean": None, "std": None, "median": None},
        "normalization": {"a_min": -200.0, "a_max": 200.0, "subtrahend": -200.0, "divisor": 400.0},
        "labels": [0, 1, 2],
        "num_cases": 131,
        "case_ids": None,
        "median_shape": None,
        "foreground_bbox_max_mm": None,
        "foreground_bbox_max_voxels": None,
    },
}


def intensity_normalization(fingerprint: Mapping[str, Any]) -> dict[str, float]:
    """``{"a_min", "a_max", "subtrahend", "divisor"}``: clip to ``[a_min, a_max]`` then ``(x - subtrahend) / divisor``.

    Taken from ``fingerprint["normalization"]`` when present (fixed windows such as LiTS' min-max), else nnU-Net's CT
    scheme from the foreground statistics: clip to the 0.5/99.5 percentiles, subtract the mean, divide by the std.
    """
    if fingerprint.get("normalization"):
        return {k: float(v) for k, v in fingerprint["normalization"].items()}
    stats = fingerprint["intensity"]
    needed = ("percentile_00_5", "percentile_99_5", "mean", "std")
    if any(stats.get(k) is None for k in needed):
        raise ValueError(f"the fingerprint has no foreground intensity statistics {needed}: {stats}")
    return {
        "a_min": float(stats["percentile_00_5"]),
        "a_max": float(stats["percentile_99_5"]),
        "subtrahend": float(stats["mean"]),
        "divisor": max(float(stats["std"]), 1e-8),
    }


def _ras_order(affine: np.ndarray) -> np.ndarray:
    """``order[i]`` = world axis (0 = x, 1 = y, 2 = z) that array axis ``i`` runs along."""
    return nib.orientations.io_orientation(affine)[:, 0].astype(int)


def _to_ras(values: Sequence[float], order: np.ndarray) -> list[float]:
    ras = [0.0, 0.0, 0.0]
    for array_axis, world_axis in enumerate(order):
        ras[world_axis] = float(values[array_axis])
    return ras


def _case_stats(item: Item, num_classes: Optional[int], samples_per_case: int, seed: int) -> dict[str, Any]:
    image, label, problems = load_checked_case(item, num_classes)
    if label is None and not problems:
        problems = [f"{item['image']}: case {item['case_id']} has no label; the fingerprint needs labels"]
    if problems:
        return {"problems": problems}
    affine = np.asarray(image.affine, dtype=np.float64)[:3, :3]
    # NIfTI stores float32 spacings; rounding to 1e-6 mm reports 0.8 rather than 0.800000011920929.
    zooms = np.round(np.sqrt((affine**2).sum(axis=0)), 6)
    order = _ras_order(np.asarray(image.affine, dtype=np.float64))
    image_np, label_np = image.numpy(), label.numpy()
    foreground = label_np > 0
    values = image_np[foreground]
    # The per-case seed keeps the sample independent of the case's position in the list and of worker timing.
    rng = np.random.default_rng([seed, zlib.crc32(item["case_id"].encode())])
    if values.size > samples_per_case:
        values = rng.choice(values, samples_per_case, replace=False)
    bbox_mm = None
    if foreground.any():
        indices = np.nonzero(foreground)
        extent = np.array([idx.max() - idx.min() + 1 for idx in indices], dtype=np.float64)
        bbox_mm = _to_ras(extent * zooms, order)
    return {
        "case_id": item["case_id"],
        "spacing": _to_ras(zooms, order),
        "shape": [int(s) for s in _to_ras(image_np.shape[:3], order)],
        "samples": values.astype(np.float64),
        "labels": label_values_present(label_np).tolist(),
        "foreground_voxels": int(foreground.sum()),
        "bbox_mm": bbox_mm,
        "problems": [],
    }


def _summarise(samples: np.ndarray) -> dict[str, Optional[float]]:
    if samples.size == 0:
        return {k: None for k in ("percentile_00_5", "percentile_99_5", "mean", "std", "median", "min", "max")}
    p005, p995, median = np.percentile(samples, [0.5, 99.5, 50.0])
    return {
        "percentile_00_5": float(p005),
        "percentile_99_5": float(p995),
        "mean": float(samples.mean()),
        "std": float(samples.std()),
        "median": float(median),
        "min": float(samples.min()),
        "max": float(samples.max()),
    }


def with_case_ids(datalist: Sequence[Item]) -> list[Item]:
    """``datalist`` with a ``case_id`` in every item: items without one (MONAI Label's training datalists carry only
    ``image`` and ``label``) are named after their image as predictions are
    (:func:`monai_effseg.data.case_id_from_path`)."""

    return [item if "case_id" in item else {**item, "case_id": case_id_from_path(item["image"])} for item in datalist]


def compute_fingerprint(
    datalist: Sequence[Item],
    num_classes: Optional[int] = None,
    num_workers: int = 2,
    samples_per_case: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fingerprint of a labelled datalist (see the module docstring for the axis order).

    Args:
        datalist: ``[{"image", "label", "case_id"}, ...]``.
        num_classes: label values must lie in ``[0, num_classes - 1]``; ``None`` checks only for integers >= 0.
        num_workers: cases read in parallel (threads: the work is decompression and numpy, both release the GIL).
        samples_per_case: foreground voxels sampled per case for the intensity statistics (nnU-Net uses 10,000).
        seed: sampling seed.

    Returns:
        ``{"spacing", "intensity": {"percentile_00_5", "percentile_99_5", "mean", "std", "median", "min", "max"},
        "median_shape", "foreground_bbox_max_mm", "foreground_bbox_max_voxels", "labels", "num_cases", "case_ids",
        "cases": {case_id: {"spacing", "shape", "foreground_voxels"}}, "axes": "RAS", "version"}``. Spacing is the
        per-axis median; ``median_shape`` is the median shape after resampling to that spacing;
        ``foreground_bbox_max_*`` is the per-axis maximum over cases of the foreground bounding-box extent (the
        smallest box that covers every case's foreground, e.g. the cascade's stage-2 crop), in mm and in voxels at
        the target spacing.

    Raises:
        DataValidationError: listing every unreadable, malformed or inconsistent file.
    """
    if not datalist:
        raise ValueError("compute_fingerprint needs at least one case")
    datalist = with_case_ids(datalist)
    workers = max(1, int(num_workers))

    def stats(item: Item) -> dict[str, Any]:
        return _case_stats(item, num_classes, samples_per_case, seed)

    if workers == 1:
        results = [stats(item) for item in datalist]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(stats, datalist))
    problems = [p for result in results for p in result["problems"]]
    if problems:
        raise DataValidationError(problems, "dataset")

    spacings = np.array([r["spacing"] for r in results])
    target = np.median(spacings, axis=0)
    resampled_shapes = np.array([np.array(r["shape"]) * np.array(r["spacing"]) / target for r in results])
    boxes = np.array([r["bbox_mm"] for r in results if r["bbox_mm"] is not None])
    bbox_mm = boxes.max(axis=0) if boxes.size else None
    empty = [r["case_id"] for r in results if r["bbox_mm"] is None]
    if empty:
        logger.warning("cases without foreground (no intensity samples): %s", empty)
    if num_classes is None:
        unusual = {r["case_id"]: sorted(set(r["labels"]) - set(USUAL_LABELS)) for r in results}
        unusual = {case: labels for case, labels in unusual.items() if labels}
        if unusual:
            logger.warning(
                "label values outside the usual %s (KiTS 0-3, LiTS 0-2) in %d case(s): %s. They are recorded as "
                "classes; pass num_classes (effseg fingerprint --num-classes N) to reject them, or fix the label maps",
                list(USUAL_LABELS),
                len(unusual),
                unusual,
            )
    return {
        "version": FINGERPRINT_VERSION,
        "axes": AXES,
        "spacing": [float(s) for s in target],
        "intensity": _summarise(np.concatenate([r["samples"] for r in results])),
        "median_shape": [int(round(s)) for s in np.median(resampled_shapes, axis=0)],
        "foreground_bbox_max_mm": None if bbox_mm is None else [float(v) for v in bbox_mm],
        "foreground_bbox_max_voxels": None if bbox_mm is None else [int(math.ceil(v - 1e-6)) for v in bbox_mm / target],
        "labels": sorted({label for r in results for label in r["labels"]}),
        "num_cases": len(results),
        "case_ids": [r["case_id"] for r in results],
        "cases": {
            r["case_id"]: {"spacing": r["spacing"], "shape": r["shape"], "foreground_voxels": r["foreground_voxels"]}
            for r in results
        },
    }


USUAL_LABELS = (0, 1, 2, 3)
"""Label values of the zoo's datasets (KiTS21: background, kidney, tumour, cyst; KiTS19 and LiTS use 0-2)."""


def load_fingerprint(path: Optional[PathLike], default: Union[str, Mapping[str, Any], None] = None) -> dict[str, Any]:
    """Reads a fingerprint JSON; when ``path`` is ``None`` or missing, returns ``default``.

    ``default`` is a name in :data:`DEFAULT_FINGERPRINTS` (``"kits19"``, ``"kits19_sauron"``, ``"lits"``) or a dict.
    Without a default a missing file raises ``FileNotFoundError``.
    """
    if path is not None and Path(path).is_file():
        return json.loads(Path(path).read_text(encoding="utf-8"))
    if default is None:
        raise FileNotFoundError(
            f"fingerprint {path} does not exist; compute it (effseg fingerprint) or pass a default, one of "
            f"{sorted(DEFAULT_FINGERPRINTS)}"
        )
    if isinstance(default, str):
        if default not in DEFAULT_FINGERPRINTS:
            raise KeyError(f"unknown default fingerprint {default!r}; expected one of {sorted(DEFAULT_FINGERPRINTS)}")
        logger.info("fingerprint %s not found; using the published %r values", path, default)
        return copy.deepcopy(DEFAULT_FINGERPRINTS[default])
    return copy.deepcopy(dict(default))


def load_or_compute_fingerprint(
    datalist: Sequence[Item],
    path: PathLike,
    num_classes: Optional[int] = None,
    num_workers: int = 2,
    samples_per_case: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The fingerprint cached at ``path`` if it was computed for exactly these case ids, else computed and written
    atomically to ``path``."""
    path = Path(path)
    datalist = with_case_ids(datalist)
    wanted = sorted(item["case_id"] for item in datalist)
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            cached = {}
        if sorted(cached.get("case_ids") or []) == wanted and cached.get("version") == FINGERPRINT_VERSION:
            logger.info("reusing fingerprint %s", path)
            return cached
        logger.info("fingerprint %s was computed for other cases; recomputing", path)
    fingerprint = compute_fingerprint(
        datalist, num_classes=num_classes, num_workers=num_workers, samples_per_case=samples_per_case, seed=seed
    )
    atomic_write_json(path, fingerprint)
    return fingerprint
