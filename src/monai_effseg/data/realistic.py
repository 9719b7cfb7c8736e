"""A second embedded KiTS dataset built around real label maps: kidney and tumour shapes, sizes and positions come from
KiTS19 segmentations; the image is a CT-like rendering around them (:mod:`monai_effseg.data.realistic_ct`).

Case ``i`` takes label map ``i % n`` (``n`` = 10 for the repository's labels) and draws, from
``default_rng([seed, 3, i])``, an augmentation (left-right flip, scale, rotation about the body's long axis, a smooth
elastic deformation), an output spacing (by default 2.2-2.8 mm in-plane and 2.5/3/4/5 mm slices, never thinner than
the source's), a body around the kidneys, and the intensities. The label is resampled by linear interpolation of the
kidney and tumour masks (threshold 0.5), so a thin-slice source gives smooth shapes at any spacing. The output is
cropped to the abdomen: the body outline with 3-12 mm of air around it, and the kidneys with ``margin_mm`` above and
below. Files are written in KiTS19's layout and convention: (z, y, x) arrays with an IPL affine, int16 HU and uint8
labels; ``realistic.json`` next to the cases records the settings and, per case, the source, augmentation, geometry
and the tumour's contrast to the kidney. Caching and atomic generation are :mod:`monai_effseg.data.synthetic`'s.

Where the label maps come from: ``labels_dir``, else ``$EFFSEG_KITS19_LABELS``, else the repository's
``tests/data/kits19_labels`` when the package runs from a checkout. The labels are CC BY-NC-SA 4.0 and are
deliberately not shipped inside the (Apache-2.0) package, so an installed wheel needs ``labels_dir`` (any KiTS19
``data`` folder works, which also gives more than 10 source shapes). See docs/realistic_data.md.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import nibabel as nib
import numpy as np
from scipy import ndimage

from monai_effseg.data.phantoms import Phantom
from monai_effseg.data.realistic_ct import draw_body, render_ct
from monai_effseg.data.synthetic import (
    _case_paths,
    default_cache_dir,
    generate_once,
    settings_digest,
    synthetic_classes,
    write_case,
)

__all__ = [
    "LABELS_ENV",
    "MANIFEST",
    "REALISTIC_VERSION",
    "LabelSource",
    "default_labels_dir",
    "find_label_maps",
    "load_label_source",
    "make_realistic_case",
    "realistic_kits_dataset",
    "select_sources",
    "source_name",
]

PathLike = Union[str, "os.PathLike[str]"]

# Bump when the generated content changes, so stale caches are not reused.
REALISTIC_VERSION = 1
MANIFEST = "realistic.json"
LABELS_ENV = "EFFSEG_KITS19_LABELS"
_REPO_LABELS = Path(__file__).resolve().parents[3] / "tests" / "data" / "kits19_labels"
_KIND_CODE = 3  # the phantoms' seeds use 1 (kits) and 2 (lits)


def default_labels_dir() -> Path:
    """``$EFFSEG_KITS19_LABELS`` if set, else the repository's ``tests/data/kits19_labels`` when present."""
    env = os.environ.get(LABELS_ENV)
    if env:
        return Path(env).expanduser()
    if _REPO_LABELS.is_dir():
        return _REPO_LABELS
    raise FileNotFoundError(
        "realistic_kits_dataset needs KiTS19 label maps and found none: pass labels_dir= (a folder of "
        "case_XXXXX.nii.gz files, or a KiTS19 data folder with case_XXXXX/segmentation.nii.gz) or set "
        f"${LABELS_ENV}. The repository's tests/data/kits19_labels (CC BY-NC-SA 4.0) is not part of the package."
    )


def find_label_maps(labels_dir: PathLike) -> list[Path]:
    """Label files in ``labels_dir``: ``case_*.nii.gz``, or else KiTS19's ``case_*/segmentation.nii.gz``; sorted."""
    root = Path(labels_dir).expanduser()
    files = sorted(root.glob("case_*.nii.gz")) or sorted(root.glob("case_*/segmentation.nii.gz"))
    if not files:
        raise FileNotFoundError(
            f"no KiTS19 label maps in {root}: expected case_XXXXX.nii.gz or case_XXXXX/segmentation.nii.gz"
        )
    return files


def source_name(path: Path) -> str:
    """A label map's name: ``case_00002`` for ``case_00002.nii.gz`` or ``case_00002/segmentation.nii.gz``."""
    return path.parent.name if path.name == "segmentation.nii.gz" else path.name[: -len(".nii.gz")]


def select_sources(files: list[Path], sources: Optional[Sequence[str]]) -> list[Path]:
    """The label maps among ``files`` named in ``sources`` (all of them when ``None``), in ``sources``' order."""
    if sources is None:
        return files
    by_name = {source_name(f): f for f in files}
    if isinstance(sources, str) or not sources:
        raise ValueError(f"sources must be a non-empty list of label map names, got {sources!r}")
    missing = [name for name in sources if name not in by_name]
    if missing:
        folder = files[0].parent if files[0].name != "segmentation.nii.gz" else files[0].parent.parent
        raise FileNotFoundError(f"no label map named {missing} in {folder}; it has {sorted(by_name)}")
    return [by_name[name] for name in sources]


@dataclass(frozen=True)
class LabelSource:
    """One label map, reoriented to RAS (x, y, z) and cropped to its kidneys (2 voxels of margin)."""

    name: str
    kidney: np.ndarray  # uint8: 1 in kidney or tumour
    tumour: np.ndarray  # uint8: 1 in tumour
    affine: np.ndarray  # voxel -> world mm of the cropped arrays
    spacing: tuple[float, float, float]  # (x, y, z) mm
    kidney_points: np.ndarray  # (n, 3) world mm of up to 20,000 kidney (label 1) voxels
    extent_points: np.ndarray  # (n, 3) world mm of up to 20,000 kidney or tumour voxels
    midline_x: float  # world x of the patient's midline
    kidney_ml: float  # kidney + tumour volume


def load_label_source(path: PathLike) -> LabelSource:
    """The label map at ``path`` as a :class:`LabelSource` (cached per process)."""
    stat = Path(path).stat()
    return _load_source(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _points(mask: np.ndarray, affine: np.ndarray, limit: int = 20000) -> np.ndarray:
    index = np.argwhere(mask)
    index = index[:: max(1, len(index) // limit)]
    return index @ affine[:3, :3].T + affine[:3, 3]


@functools.lru_cache(maxsize=12)
def _load_source(path: str, _size: int, _mtime_ns: int) -> LabelSource:
    image = nib.load(path)
    label = np.asanyarray(image.dataobj)
    foreground = label > 0
    if label.ndim != 3 or not foreground.any():
        raise ValueError(f"{path}: expected a 3D label map with kidney (1) and tumour (2) voxels")
    box = []
    for axis in range(3):
        hit = np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hit[0]) - 2, 0), min(int(hit[-1]) + 3, label.shape[axis])))
    crop = label[tuple(box)]
    affine = image.affine.copy()
    affine[:3, 3] += image.affine[:3, :3] @ np.array([s.start for s in box], dtype=float)
    ornt = nib.orientations.io_orientation(affine)
    affine = affine @ nib.orientations.inv_ornt_aff(ornt, crop.shape)
    crop = np.ascontiguousarray(nib.orientations.apply_orientation(crop, ornt))
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    extent_points = _points(crop > 0, affine)
    kidney_points = _points(crop == 1, affine) if (crop == 1).any() else extent_points
    # Patients lie centred in the scanner: split the kidneys at the field of view's centre, midline between them;
    # a kidney mass over 120 mm wide on one side is a horseshoe kidney: midline at its middle; else (one kidney) the
    # field of view's centre.
    fov_x = float((image.affine @ np.r_[(np.array(label.shape) - 1) / 2.0, 1.0])[0])
    left = kidney_points[:, 0] < fov_x
    x_min, x_max = float(extent_points[:, 0].min()), float(extent_points[:, 0].max())
    if min(left.mean(), 1.0 - left.mean()) >= 0.1:
        midline = float((kidney_points[left, 0].mean() + kidney_points[~left, 0].mean()) / 2.0)
    else:
        midline = (x_min + x_max) / 2.0 if x_max - x_min > 120.0 else fov_x
    return LabelSource(
        name=source_name(Path(path)),
        kidney=(crop > 0).astype(np.uint8),
        tumour=(crop == 2).astype(np.uint8),
        affine=affine,
        spacing=spacing,  # type: ignore[arg-type]
        kidney_points=kidney_points,
        extent_points=extent_points,
        midline_x=midline,
        kidney_ml=float(np.count_nonzero(crop) * np.prod(spacing) / 1000.0),
    )


def _augmentation(rng: np.random.Generator, params: dict[str, Any]) -> dict[str, Any]:
    flip = bool(params["flip"]) and bool(rng.random() < 0.5)
    scale = rng.uniform(*params["scale"]) * rng.uniform(0.97, 1.03, 3)
    rotation = rng.uniform(-1.0, 1.0) * params["rotation_deg"]
    return {"flip_lr": flip, "scale": [round(float(s), 4) for s in scale], "rotation_deg": round(float(rotation), 2),
            "elastic_mm": float(params["elastic_mm"])}  # fmt: skip


def _matrix(aug: dict[str, Any]) -> np.ndarray:
    """Linear part of the source -> output map (about the kidneys' centre): scale @ rotation about z @ flip."""
    t = np.deg2rad(aug["rotation_deg"])
    rotation = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    return np.diag(aug["scale"]) @ rotation @ np.diag([-1.0 if aug["flip_lr"] else 1.0, 1.0, 1.0])


def _spacing(rng: np.random.Generator, source: LabelSource, spacing: Any, params: dict[str, Any]) -> np.ndarray:
    """Output spacing, (x, y, z) mm."""
    if spacing == "source":
        return np.array(source.spacing)
    if spacing is None:
        thickness = max(float(rng.choice(params["slice_mm"])), source.spacing[2])
        in_plane = float(rng.uniform(*params["in_plane_mm"]))
        return np.array([in_plane, in_plane, thickness])
    return np.array(spacing[::-1], dtype=float)  # given as KiTS19's (z, y, x)


def _elastic_field(rng: np.random.Generator, axes: list[np.ndarray], sd_mm: float, control_mm: float = 40.0):
    """Smooth random displacement (3 arrays, mm): Gaussian radial basis functions every ``control_mm`` along each axis
    (separable, so cheap), each component scaled to an SD of ``sd_mm``."""
    weights = []
    for a in axes:
        control = np.arange(a[0] - control_mm, a[-1] + control_mm + 1e-6, control_mm)
        weights.append(np.exp(-0.5 * ((a[:, None] - control[None, :]) / control_mm) ** 2).astype(np.float32))
    fields = []
    for _ in range(3):
        coeff = rng.standard_normal([w.shape[1] for w in weights]).astype(np.float32)
        field = np.einsum("ia,jb,kc,abc->ijk", *weights, coeff, optimize=True)
        fields.append(field * np.float32(sd_mm / max(float(field.std()), 1e-6)))
    return fields


def _sample_label(source: LabelSource, forward: np.ndarray, centre: np.ndarray, rng: np.random.Generator,
                  shape, spacing: np.ndarray, origin: np.ndarray, extent: np.ndarray, elastic_mm: float) -> np.ndarray:  # fmt: skip
    """The augmented label on the output grid: every output voxel (world ``w``) reads the source at
    ``centre + forward^-1 (w - centre) + elastic(w)``, only inside the box around the kidneys' mapped extent."""
    pad = 3.0 * elastic_mm + 2.0 * float(spacing.max())
    lo = np.clip(np.floor((extent.min(0) - pad - origin) / spacing), 0, None).astype(int)
    hi = np.minimum(np.ceil((extent.max(0) + pad - origin) / spacing).astype(int) + 1, shape)
    axes = [origin[k] + np.arange(lo[k], hi[k]) * spacing[k] for k in range(3)]
    world = np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij", sparse=True)
    to_index = np.linalg.inv(source.affine)
    backward = np.linalg.inv(forward)
    linear = to_index[:3, :3] @ backward
    offset = to_index[:3, :3] @ (centre - backward @ centre) + to_index[:3, 3]
    field = _elastic_field(rng, axes, elastic_mm) if elastic_mm > 0 else None
    coords = np.empty((3, *(h - l for l, h in zip(lo, hi))), dtype=np.float32)
    for k in range(3):
        coords[k] = linear[k, 0] * world[0] + linear[k, 1] * world[1] + linear[k, 2] * world[2] + offset[k]
        if field is not None:
            coords[k] += to_index[k, 0] * field[0] + to_index[k, 1] * field[1] + to_index[k, 2] * field[2]
    kidney = ndimage.map_coordinates(source.kidney, coords, order=1, output=np.float32)
    tumour = ndimage.map_coordinates(source.tumour, coords, order=1, output=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    box = label[tuple(slice(l, h) for l, h in zip(lo, hi))]
    box[kidney >= 0.5] = 1
    box[tumour >= 0.5] = 2
    return label


def make_realistic_case(
    source: LabelSource, rng: np.random.Generator, params: dict[str, Any]
) -> tuple[Phantom, dict[str, Any]]:
    """One case from ``source``: augmentation, output grid, label, image (RAS arrays) and its manifest record.
    ``params`` holds :func:`realistic_kits_dataset`'s settings."""
    aug = _augmentation(rng, params)
    spacing = _spacing(rng, source, params["spacing"], params)
    forward = _matrix(aug)
    centre = source.kidney_points.mean(axis=0)
    kidney = (source.kidney_points - centre) @ forward.T + centre
    extent = (source.extent_points - centre) @ forward.T + centre
    midline = (np.array([source.midline_x, *centre[1:]]) - centre) @ forward.T + centre
    body = draw_body(rng, kidney, extent, float(midline[0]))
    x0, x1, y0, y1 = body.bounds()
    air = rng.uniform(3.0, 12.0)
    lo = np.array([x0 - air, y0 - air, extent[:, 2].min() - params["margin_mm"]])
    hi = np.array([x1 + air, y1 + air, extent[:, 2].max() + params["margin_mm"]])
    shape = tuple(int(np.ceil((h - l) / s)) + 1 for l, h, s in zip(lo, hi, spacing))
    label = _sample_label(source, forward, centre, rng, shape, spacing, lo, extent, aug["elastic_mm"])
    grid_centre = lo + (np.array(shape) - 1) / 2.0 * spacing
    image, record = render_ct(rng, label, tuple(spacing), grid_centre, body, params["contrast_hu"],
                              params["hypo_probability"])  # fmt: skip
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = lo
    voxel_ml = float(np.prod(spacing)) / 1000.0
    n_kidney, n_tumour = int(np.count_nonzero(label)), int(np.count_nonzero(label == 2))
    record = {
        "source": source.name,
        **aug,
        "spacing_zyx": [round(float(s), 4) for s in spacing[::-1]],
        "shape_zyx": list(shape[::-1]),
        "source_spacing_zyx": [round(s, 4) for s in source.spacing[::-1]],
        "source_kidney_ml": round(source.kidney_ml, 2),
        "kidney_ml": round(n_kidney * voxel_ml, 2),  # kidney + tumour, as source_kidney_ml
        "tumour_fraction": round(n_tumour / max(n_kidney, 1), 4),
        **record,
    }
    return Phantom(image=image, label=label, spacing=tuple(spacing), affine=affine), record


def _generate(target: Path, params: dict[str, Any], files: list[Path]) -> None:
    cases = []
    for index in range(params["num_cases"]):
        rng = np.random.default_rng([params["seed"], _KIND_CODE, index])
        phantom, record = make_realistic_case(load_label_source(files[index % len(files)]), rng, params)
        image_path, label_path = _case_paths(target, "kits", params["layout"], index)
        write_case(phantom, image_path, label_path, params["orientations"][index % len(params["orientations"])])
        cases.append({"case_id": image_path.parent.name, **record})
    (target / MANIFEST).write_text(json.dumps({**params, "cases": cases}, indent=2) + "\n")


def realistic_kits_dataset(
    num_cases: int = 12,
    root: Optional[PathLike] = None,
    seed: int = 0,
    labels_dir: Optional[PathLike] = None,
    sources: Optional[Sequence[str]] = None,
    spacing: Union[None, str, Sequence[float]] = None,
    in_plane_mm: Sequence[float] = (2.2, 2.8),
    slice_mm: Sequence[float] = (2.5, 3.0, 4.0, 5.0),
    margin_mm: float = 20.0,
    flip: bool = True,
    scale: Sequence[float] = (0.9, 1.1),
    rotation_deg: float = 10.0,
    elastic_mm: float = 3.0,
    contrast_hu: Sequence[float] = (10.0, 110.0),
    hypo_probability: float = 0.8,
    layout: str = "kits19",
    orientations: Sequence[str] = ("IPL",),
) -> Path:
    """Path of a KiTS19-layout dataset of CT-like cases around real (augmented) label maps, generated on first use.

    Args:
        num_cases: number of cases; case ``i`` uses label map ``i % len(label maps)`` and does not depend on it.
        root: cache folder; the dataset lands in ``<root>/synthetic/kits_real-v<version>-<hash of the settings>``.
            Default: :func:`monai_effseg.data.default_cache_dir`.
        seed: generator seed.
        labels_dir: folder of KiTS19 label maps (``case_*.nii.gz``, or a KiTS19 ``data`` folder); default
            :func:`default_labels_dir`. Only file names and sizes enter the cache key.
        sources: names of the label maps to use (``"case_00002"``, ...; default: all of them, sorted), so that a
            training set and a hold-out set can be drawn from different patients.
        spacing: ``None`` (per case: in-plane drawn from ``in_plane_mm``, slices from ``slice_mm`` but never thinner
            than the source's), ``"source"`` (the label map's own spacing, 0.5-5 mm slices: large, slow volumes), or
            a fixed ``(z, y, x)`` in mm, KiTS19's axis order.
        in_plane_mm: range of the in-plane spacing when ``spacing`` is ``None``.
        slice_mm: slice thicknesses to draw from when ``spacing`` is ``None``.
        margin_mm: field of view above and below the kidneys.
        flip: mirror left-right with probability 0.5.
        scale: range of the isotropic scale factor (each axis then varies +-3% more).
        rotation_deg: maximum rotation about the body's long (z) axis.
        elastic_mm: SD of the smooth elastic displacement (0: none).
        contrast_hu: range (log-uniform) of the tumour's mean-HU difference to the kidney's, from subtle to clear.
        hypo_probability: probability that the tumour is darker than the kidney (else brighter).
        layout: ``"kits19"`` (``segmentation.nii.gz``) or ``"kits21"`` (``aggregated_MAJ_seg.nii.gz``).
        orientations: axis codes the cases are saved in, in turn (KiTS19's own is ``"IPL"``).

    Returns:
        the dataset folder, ready for :func:`monai_effseg.data.build_datalist`; ``realistic.json`` in it records the
        settings and each case's source, augmentation, geometry and intensities.
    """
    if num_cases < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}")
    if layout not in ("kits19", "kits21"):
        raise ValueError(f"layout must be 'kits19' or 'kits21', got {layout!r}")
    if not (spacing is None or spacing == "source" or (len(spacing) == 3 and min(spacing) > 0)):
        raise ValueError(f"spacing must be None, 'source' or a positive (z, y, x) in mm, got {spacing!r}")
    if not 0 < contrast_hu[0] <= contrast_hu[1]:
        raise ValueError(f"contrast_hu must be a range of positive HU, got {contrast_hu!r}")
    files = select_sources(find_label_maps(labels_dir if labels_dir is not None else default_labels_dir()), sources)
    params = {
        "kind": "kits_real",
        "version": REALISTIC_VERSION,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "spacing": spacing if spacing is None or spacing == "source" else [float(s) for s in spacing],
        "in_plane_mm": [float(v) for v in in_plane_mm],
        "slice_mm": [float(v) for v in slice_mm],
        "margin_mm": float(margin_mm),
        "flip": bool(flip),
        "scale": [float(v) for v in scale],
        "rotation_deg": float(rotation_deg),
        "elastic_mm": float(elastic_mm),
        "contrast_hu": [float(v) for v in contrast_hu],
        "hypo_probability": float(hypo_probability),
        "layout": layout,
        "orientations": [str(o).upper() for o in orientations],
        "classes": synthetic_classes("kits"),
        "labels": [[source_name(f), f.stat().st_size] for f in files],
    }
    cache = Path(root).expanduser() if root is not None else default_cache_dir()
    final = cache / "synthetic" / f"kits_real-v{REALISTIC_VERSION}-{settings_digest(params)}"
    return generate_once(final, lambda tmp: _generate(tmp, params, files), MANIFEST, f"{num_cases} realistic cases")
