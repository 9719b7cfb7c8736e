"""Overlap and surface primitives shared by the KiTS and LiTS protocols.

Everything here works on binary masks of one case and first crops them to the bounding box of their union
plus a one-voxel zero margin. Outside that box both masks are empty, so Dice is unchanged, and the margin
keeps every surface voxel (and every DeepMind corner surfel) of the box edge, so surface metrics are exact too.

MONAI (``monai.metrics``) supplies the surface Dice of compact masks, the surfel-area table and neighbour-code kernel,
the voxel-centre edges and the surface distances. This module adds three things MONAI does not do: neighbour codes
summed from array slices instead of a CPU ``conv3d``, a per-connected-component path with scipy KD-tree distances for
large or mostly empty boxes, and the 18-neighbourhood erosion of the LiTS ``Surface`` class (scipy). When each path
runs, and why, is in docs/evaluation.md (KiTS, surface Dice).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from monai.metrics import compute_surface_dice
from monai.metrics.utils import (
    get_code_to_measure_table,
    get_edge_surface_distance,
    get_mask_edges,
    get_surface_distance,
)
from monai.utils import convert_to_numpy
from scipy import ndimage
from scipy.spatial import cKDTree

from monai_effseg.boxes import crop_padded, union_bbox
from monai_effseg.utils import as_label_array

__all__ = ["as_label_array", "crop_to_union", "dice", "surface_dice", "surface_distances", "distance_summary"]


@contextmanager
def _quiet_monai() -> Iterator[None]:
    # MONAI 1.6 warns about its own internal use of a deprecated get_mask_edges argument on every call
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        yield


def crop_to_union(*arrays: np.ndarray, margin: int = 1) -> list[np.ndarray]:
    """Crop ``arrays`` (same shape) to the union bounding box of their non-zero voxels plus ``margin``.

    Where the margin leaves the image the crop is zero-padded, which is what surface extraction assumes anyway
    (scipy's erosion and MONAI's corner codes treat outside voxels as background). All-empty inputs come back as
    ``(1,) * ndim`` zero arrays so callers need no special case.
    """
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(f"shape mismatch: {[a.shape for a in arrays]}")
    box = union_bbox(*arrays, margin=margin)
    if box is None:
        return [np.zeros((1,) * len(shape), dtype=a.dtype) for a in arrays]
    return [crop_padded(a, box) for a in arrays]


def dice(pred: np.ndarray, gt: np.ndarray, empty_value: float = 1.0) -> float:
    """Dice of two binary masks; ``empty_value`` when both are empty (KiTS21 ``metrics.py``: 1).

    medpy's ``dc`` (used by the LiTS script) returns 0 for two empty masks; pass ``empty_value=0.0`` to match it.
    """
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return float(empty_value)
    return 2.0 * int(np.count_nonzero(pred & gt)) / total


# A bounding box this many times larger than the foreground it holds (a far false positive, scattered specks) is
# mostly empty: then surfaces are extracted component by component instead of densely over the box.
_SPARSE_RATIO = 12
_SPARSE_MIN_VOXELS = 2_000_000
# Above this union box size, surface Dice skips compute_surface_dice (see surface_dice).
_DENSE_MAX_VOXELS = 4_000_000


def _volume(box: Sequence[tuple[int, int]]) -> int:
    return int(np.prod([hi - lo for lo, hi in box]))


def _is_sparse(*masks: np.ndarray) -> bool:
    box = union_bbox(*masks)
    volume = _volume(box) if box is not None else 0
    return volume > _SPARSE_MIN_VOXELS and volume > _SPARSE_RATIO * sum(int(np.count_nonzero(m)) for m in masks)


def _edges_in_box(
    crop: np.ndarray, spacing: Sequence[float], subvoxels: bool, connectivity: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Edge indices and surfel areas of a mask that has a zero margin.

    ``subvoxels``: DeepMind corner surfels with MONAI's area table, as ``get_mask_edges(spacing=...)``; else MONAI's
    ``get_mask_edges`` voxel-centre edges (mask XOR 6-connected erosion), or with ``connectivity=2`` the
    18-neighbourhood erosion of the LiTS ``Surface`` class, which MONAI cannot do.
    """
    crop = np.ascontiguousarray(crop)
    if subvoxels:
        # MONAI's code-to-area table (DeepMind's marching-cubes surfel areas) and neighbour-code kernel; the codes are
        # summed from shifted slices, which is far cheaper on CPU than MONAI's conv3d with this 1-channel 2x2x2 kernel
        # (docs/evaluation.md). conv3d is a cross-correlation, so code[i] = sum_j kernel[j] * mask[i + j] here too.
        table, kernel = get_code_to_measure_table(list(spacing))
        weights = convert_to_numpy(kernel).reshape((2,) * crop.ndim).astype(np.uint8)
        out_shape = tuple(n - 1 for n in crop.shape)
        codes = np.zeros(out_shape, dtype=np.uint8)
        for offset in np.ndindex(*weights.shape):
            window = crop[tuple(slice(o, o + n) for o, n in zip(offset, out_shape))]
            codes += weights[offset] * window.astype(np.uint8)
        edges = (codes != 0) & (codes != len(table) - 1)
        return np.argwhere(edges), convert_to_numpy(table, dtype=np.float64)[codes[edges]]
    if connectivity == 1:
        t = torch.from_numpy(crop)
        with _quiet_monai():
            edges = convert_to_numpy(get_mask_edges(t, t, crop=False)[0])
        return np.argwhere(edges), None
    edges = crop ^ ndimage.binary_erosion(crop, ndimage.generate_binary_structure(crop.ndim, connectivity))
    return np.argwhere(edges), None


def _surface_points(
    mask: np.ndarray, spacing: Sequence[float], subvoxels: bool, connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """Surface elements of one mask: coordinates in mm (box offsets added, so two masks' points are comparable;
    corner grids of both share the same half-voxel shift) and, for surfels, their areas.

    A sparse mask is processed per 26-connected component, each in its own box. That is exact: the voxels of any
    2x2x2 corner cube, and the 6/18-neighbours of any voxel, are 26-adjacent and so in one component.
    """
    box = union_bbox(mask, margin=1)
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    if _is_sparse(mask):
        crop = crop_padded(mask, box)  # type: ignore[arg-type]
        components, _ = ndimage.label(crop, ndimage.generate_binary_structure(crop.ndim, crop.ndim))
        for index, sl in enumerate(ndimage.find_objects(components), start=1):
            sub_box = [(s.start - 1, s.stop + 1) for s in sl]
            pieces.append((crop_padded(components, sub_box) == index, np.array([lo for lo, _ in sub_box])))
        offset = np.array([lo for lo, _ in box])  # type: ignore[union-attr]
        pieces = [(piece, start + offset) for piece, start in pieces]
    else:
        pieces.append((crop_padded(mask, box), np.array([lo for lo, _ in box])))  # type: ignore[arg-type,union-attr]
    points, areas = [], []
    for piece, start in pieces:
        idx, area = _edges_in_box(piece, spacing, subvoxels, connectivity)
        points.append((idx + start) * np.asarray(spacing, dtype=np.float64))
        areas.append(area)
    return np.concatenate(points), (np.concatenate(areas) if subvoxels else None)  # type: ignore[arg-type]


def _sparse_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], subvoxels: bool, connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    # the same KD-tree nearest-neighbour distances as MONAI's get_surface_distance, on each mask's own surface
    p, area_p = _surface_points(pred, spacing, subvoxels, connectivity)
    g, area_g = _surface_points(gt, spacing, subvoxels, connectivity)
    return cKDTree(g).query(p)[0], cKDTree(p).query(g)[0], area_p, area_g


def surface_dice(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance: float) -> float:
    """Surface Dice at ``tolerance`` mm with DeepMind / KiTS21 semantics.

    MONAI's ``compute_surface_dice(use_subvoxels=True)`` reproduces DeepMind's ``surface-distance`` (corner-grid
    surfels weighted by their area; 8e-8 from it on the KiTS19 reference cases) and hence KiTS21's
    ``compute_surface_dice``. The KiTS21 empty rules override MONAI: both empty gives 1 (MONAI: NaN), one empty 0.

    ``compute_surface_dice`` finds surfels with a ``conv3d`` over the whole union bounding box of both masks, which
    is most of the scan when a prediction has a far false positive. So for boxes over 4 million voxels, or mostly
    empty ones, the same steps run on less work: MONAI's surfel-area table, neighbour codes summed from array slices,
    one box per connected component when the box is mostly empty, and KD-tree distances. Both paths agree to float
    precision (tested); docs/evaluation.md gives the costs.
    """
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return 1.0
    if not pred_any or not gt_any:
        return 0.0
    spacing = [float(s) for s in spacing]
    box = union_bbox(pred, gt)
    if _volume(box) > _DENSE_MAX_VOXELS or _is_sparse(pred, gt):  # type: ignore[arg-type]
        d_pg, d_gp, area_p, area_g = _sparse_distances(pred, gt, spacing, subvoxels=True)
        correct = area_p[d_pg <= tolerance].sum() + area_g[d_gp <= tolerance].sum()  # type: ignore[index]
        return float(correct / (area_p.sum() + area_g.sum()))  # type: ignore[union-attr]
    pred, gt = crop_to_union(pred, gt)
    both = torch.from_numpy(np.stack([pred, gt])[:, None].astype(np.float32))
    with _quiet_monai():
        value = compute_surface_dice(
            both[:1], both[1:], [float(tolerance)], include_background=True, spacing=spacing, use_subvoxels=True
        )
    return float(value.item())


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed distances (mm) pred-edge -> gt-edge and gt-edge -> pred-edge between voxel-centre surfaces.

    ``connectivity=1`` is the medpy / MONAI edge (mask XOR 6-connected erosion); distances come from MONAI's
    ``get_edge_surface_distance`` (exact Euclidean, KD-tree). ``connectivity=2`` erodes with the
    18-neighbourhood like the LiTS challenge's ``Surface`` class, which MONAI cannot do, so that case computes
    the edges with scipy and uses MONAI only for the distances. Far-apart masks take the per-mask path of
    :func:`surface_dice`. Returns ``None`` if either mask is empty.
    """
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    if not pred.any() or not gt.any():
        return None
    spacing = [float(s) for s in spacing]
    if _is_sparse(pred, gt):
        d_pg, d_gp, _, _ = _sparse_distances(pred, gt, spacing, subvoxels=False, connectivity=connectivity)
        return d_pg, d_gp
    pred, gt = crop_to_union(pred, gt)
    if connectivity == 1:
        with _quiet_monai():
            _, (d_pg, d_gp), _ = get_edge_surface_distance(
                torch.from_numpy(pred), torch.from_numpy(gt), spacing=spacing, symmetric=True
            )
        return convert_to_numpy(d_pg, dtype=np.float64), convert_to_numpy(d_gp, dtype=np.float64)
    structure = ndimage.generate_binary_structure(pred.ndim, connectivity)
    edges_pred = pred ^ ndimage.binary_erosion(pred, structure)
    edges_gt = gt ^ ndimage.binary_erosion(gt, structure)
    d_pg = get_surface_distance(edges_pred, edges_gt, spacing=spacing)
    d_gp = get_surface_distance(edges_gt, edges_pred, spacing=spacing)
    return np.asarray(d_pg, dtype=np.float64), np.asarray(d_gp, dtype=np.float64)


def distance_summary(distances: tuple[np.ndarray, np.ndarray] | None) -> dict[str, float]:
    """ASSD, MSSD and both HD95 conventions from directed distances (NaN for an empty mask).

    - ``assd``: pooled mean over both directions = medpy 0.5 ``assd`` = MONAI
      ``compute_average_surface_distance(symmetric=True)`` (medpy <= 0.4 averaged the two directed means).
    - ``mssd``: maximum symmetric surface distance = Hausdorff = medpy ``hd`` = MONAI ``compute_hausdorff_distance``.
    - ``hd95``: max of the two directed 95th percentiles, MONAI ``compute_hausdorff_distance(percentile=95)``
      (our convention; symmetric like the Hausdorff distance it generalises).
    - ``hd95_medpy``: 95th percentile of the pooled distances, medpy ``hd95``. It is never larger than ``hd95``
      and can be up to ~5 mm smaller when a false-positive blob makes one direction heavy-tailed.
    """
    if distances is None:
        return {"assd": np.nan, "mssd": np.nan, "hd95": np.nan, "hd95_medpy": np.nan}
    d_pg, d_gp = distances
    pooled = np.concatenate([d_pg, d_gp])
    return {
        "assd": float(pooled.mean()),
        "mssd": float(pooled.max()),
        "hd95": float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))),
        "hd95_medpy": float(np.percentile(pooled, 95)),
    }
