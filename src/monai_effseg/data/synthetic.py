"""The embedded default dataset: synthetic abdominal CT phantoms, generated on first use into a cache folder and
returned in the real dataset's own layout, so every adapter and pipeline runs unchanged on it.

* ``kind="kits"``: KiTS19 layout ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` (labels 0 background,
  1 kidney, 2 tumour and, with ``cysts=True``, 3 cyst), or with ``layout="kits21"`` the KiTS21/23 file name
  ``aggregated_MAJ_seg.nii.gz``.
* ``kind="lits"``: LiTS layout ``volume-N.nii.gz`` + ``segmentation-N.nii.gz`` (0 background, 1 liver, 2 tumour).

Cases are saved in three orientations in turn, so a pipeline must use the affine: KiTS19's (z, y, x) arrays with an
IPL affine, plain RAS arrays, and LPS arrays (what DICOM-derived NIfTIs often are). Case ``i`` depends only on
``(kind, seed, i, shape, cysts)``, not on ``num_cases``. Generation is atomic: a temporary folder is filled and then
renamed, so concurrent callers (e.g. DDP ranks) never see a partial dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import nibabel as nib
import numpy as np

from monai_effseg.data.phantoms import KITS_CLASSES, LITS_CLASSES, Phantom, make_phantom

__all__ = [
    "ORIENTATIONS",
    "SYNTHETIC_VERSION",
    "default_cache_dir",
    "generate_once",
    "settings_digest",
    "synthetic_classes",
    "synthetic_dataset",
    "write_case",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# Bump when the phantom content changes, so stale caches are not reused.
SYNTHETIC_VERSION = 2
MANIFEST = "synthetic.json"

# Axis codes of the saved arrays; "IPL" with the (z, y, x) array order is KiTS19's convention.
ORIENTATIONS = ("IPL", "RAS", "LPS")
_KIND_CODES = {"kits": 1, "lits": 2}


def synthetic_classes(kind: str, cysts: bool = False) -> dict[str, int]:
    """Label values of a synthetic dataset, e.g. ``{"background": 0, "kidney": 1, "tumor": 2}``."""
    if kind == "lits":
        return dict(LITS_CLASSES)
    return {name: value for name, value in KITS_CLASSES.items() if cysts or name != "cyst"}


def default_cache_dir() -> Path:
    """``$EFFSEG_CACHE`` if set, else ``~/.cache/monai_effseg``."""
    return Path(os.environ.get("EFFSEG_CACHE") or Path.home() / ".cache" / "monai_effseg").expanduser()


def _reorient(phantom: Phantom, axcodes: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, label and affine of a RAS phantom stored with the array axes ``axcodes``."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    image = np.ascontiguousarray(nib.orientations.apply_orientation(phantom.image, transform))
    label = np.ascontiguousarray(nib.orientations.apply_orientation(phantom.label, transform))
    affine = phantom.affine @ nib.orientations.inv_ornt_aff(transform, phantom.image.shape)
    return image, label, affine


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def write_case(phantom: Phantom, image_path: Path, label_path: Path, axcodes: str = "RAS") -> None:
    """Saves a phantom as an int16 image and a uint8 label with identical geometry, arrays in ``axcodes`` order."""
    image, label, affine = _reorient(phantom, axcodes)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    _save_nifti(image.astype(np.int16), affine, image_path)
    _save_nifti(label.astype(np.uint8), affine, label_path)


def _case_paths(root: Path, kind: str, layout: str, index: int) -> tuple[Path, Path]:
    if kind == "lits":
        return root / f"volume-{index}.nii.gz", root / f"segmentation-{index}.nii.gz"
    case = root / f"case_{index:05d}"
    label_name = "aggregated_MAJ_seg.nii.gz" if layout == "kits21" else "segmentation.nii.gz"
    return case / "imaging.nii.gz", case / label_name


def _generate(target: Path, params: dict[str, Any]) -> None:
    kind, shape, seed = params["kind"], tuple(params["shape"]), params["seed"]
    for index in range(params["num_cases"]):
        rng = np.random.default_rng([seed, _KIND_CODES[kind], index])
        phantom = make_phantom(rng, kind=kind, shape=shape, cysts=params["cysts"])
        image_path, label_path = _case_paths(target, kind, params["layout"], index)
        write_case(phantom, image_path, label_path, params["orientations"][index % len(params["orientations"])])
    (target / MANIFEST).write_text(json.dumps(params, indent=2) + "\n")


def synthetic_dataset(
    kind: str = "kits",
    num_cases: int = 24,
    root: Optional[PathLike] = None,
    seed: int = 0,
    shape: Sequence[int] = (96, 96, 48),
    cysts: bool = False,
    layout: Optional[str] = None,
    orientations: Sequence[str] = ORIENTATIONS,
) -> Path:
    """Path of a synthetic dataset folder in the dataset's own layout, generated on first use.

    Args:
        kind: ``"kits"`` (kidney, tumour, optional cyst) or ``"lits"`` (liver, tumour).
        num_cases: number of cases.
        root: cache folder; the dataset lands in ``<root>/synthetic/<kind>-v<version>-<hash of the parameters>``.
            Default: :func:`default_cache_dir`.
        seed: generator seed.
        shape: in-plane matrix (x, y) and nominal slice count; each case's slice count follows its slice thickness
            (2.5-5 mm) within +-40% of the nominal one. About 0.45 M voxels per case at the default.
        cysts: KiTS only: add renal cysts labelled 3 (KiTS21 classes); ``False`` gives KiTS19's 3 classes.
        layout: KiTS only: ``"kits19"`` (default) or ``"kits21"`` (``aggregated_MAJ_seg.nii.gz``).
        orientations: axis codes the cases are saved in, in turn.

    Returns:
        the dataset folder, ready for :func:`monai_effseg.data.build_datalist`.
    """
    if kind not in _KIND_CODES:
        raise ValueError(f"kind must be one of {sorted(_KIND_CODES)}, got {kind!r}")
    if kind == "lits":
        if cysts:
            raise ValueError("cysts apply to kind='kits' only")
        layout = "lits"
    layout = layout or "kits19"
    if kind == "kits" and layout not in ("kits19", "kits21"):
        raise ValueError(f"layout for kind='kits' must be 'kits19' or 'kits21', got {layout!r}")
    if num_cases < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}")
    params = {
        "kind": kind,
        "version": SYNTHETIC_VERSION,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "shape": [int(v) for v in shape],
        "cysts": bool(cysts),
        "layout": layout,
        "orientations": [str(o).upper() for o in orientations],
        "classes": synthetic_classes(kind, cysts),
    }
    cache = Path(root).expanduser() if root is not None else default_cache_dir()
    final = cache / "synthetic" / f"{kind}-v{SYNTHETIC_VERSION}-{settings_digest(params)}"
    return generate_once(final, lambda tmp: _generate(tmp, params), MANIFEST, f"{num_cases} synthetic {kind} cases")


def settings_digest(params: dict[str, Any]) -> str:
    """Short content hash of a generator's settings (JSON, sorted keys): the cache folder's name suffix."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def generate_once(final: Path, generate: Callable[[Path], None], marker: str, what: str = "dataset") -> Path:
    """``final``, generated on first use: ``generate(tmp)`` fills a temporary sibling folder (writing ``marker``
    last), which is then renamed to ``final``, so concurrent callers (e.g. DDP ranks) never see a partial dataset."""
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    logger.info("generating %s into %s", what, final)
    try:
        generate(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / marker).is_file():
                raise
            # Another process finished the same dataset first; its copy is identical.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
