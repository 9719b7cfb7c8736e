"""The datasets a bundle's CPU demo trains and is evaluated on (``demo_dataset`` in ``configs/demo.json``).

- ``"phantoms"`` (default): :func:`~monai_effseg.data.synthetic_dataset`'s ellipsoid phantoms; small and fast, what
  the tests and the demo-time figures use. Their tumours are easy: they say little about real ones.
- ``"realistic"`` (KiTS bundles): :func:`~monai_effseg.data.realistic_kits_dataset`, CT-like cases around real
  KiTS19 label maps. The hold-out set is drawn from label maps (patients) that the training set never sees
  (:data:`REALISTIC_HOLDOUT_SOURCES`), so its tumour Dice measures what the network learnt about tumours, not about
  these shapes.

The training and hold-out sets use different seeds (0 and 1000), as the phantom demos always have.
"""

from __future__ import annotations

from pathlib import Path

from monai_effseg.data.realistic import default_labels_dir, find_label_maps, realistic_kits_dataset, source_name
from monai_effseg.data.synthetic import synthetic_dataset
from monai_effseg.demo_info import DEMO_DATASETS, demo_run_name

__all__ = ["DEMO_DATASETS", "REALISTIC_HOLDOUT_SOURCES", "demo_dataset", "demo_run_name", "realistic_sources"]

PHANTOM_KINDS = ("kits19", "kits21", "lits")
# Three patients of the repository's ten: a 10.6 ml, a 35 ml and a 51 ml tumour (2.6, 6.1 and 10.9 % of the kidney
# region); the training set keeps the extremes (a 2.3 ml and a 1.4 l tumour) and both horseshoe kidneys.
REALISTIC_HOLDOUT_SOURCES = ("case_00002", "case_00006", "case_00160")
_SEEDS = {"training": 0, "holdout": 1000}


def realistic_sources(part: str, labels_dir: str | Path | None = None) -> list[str]:
    """Label map names of the realistic demo's ``part``: the hold-out patients, or every other label map."""
    if part == "holdout":
        return list(REALISTIC_HOLDOUT_SOURCES)
    files = find_label_maps(labels_dir if labels_dir is not None else default_labels_dir())
    return [source_name(f) for f in files if source_name(f) not in REALISTIC_HOLDOUT_SOURCES]


def demo_dataset(name: str, part: str, num_cases: int, phantoms: str = "kits21") -> Path:
    """The folder of demo dataset ``name``'s ``part`` (``"training"`` or ``"holdout"``), generated on first use.

    Args:
        name: one of :data:`DEMO_DATASETS`.
        part: ``"training"`` (training and validation cases) or ``"holdout"`` (unseen cases for the evaluation).
        num_cases: number of cases.
        phantoms: the bundle's classes, for the phantoms: ``"kits21"`` (with cysts), ``"kits19"`` or ``"lits"``.
    """
    if part not in _SEEDS:
        raise ValueError(f"part must be 'training' or 'holdout', got {part!r}")
    if phantoms not in PHANTOM_KINDS:
        raise ValueError(f"phantoms must be one of {PHANTOM_KINDS}, got {phantoms!r}")
    if name == "phantoms":
        kind = "lits" if phantoms == "lits" else "kits"
        return synthetic_dataset(kind, num_cases=num_cases, seed=_SEEDS[part], cysts=phantoms == "kits21")
    if name == "realistic":
        if phantoms == "lits":
            raise ValueError(
                "demo_dataset 'realistic' is built around KiTS19 kidney label maps and has no liver: "
                "the LiTS bundles' demos run on the phantoms only (demo_dataset 'phantoms')"
            )
        return realistic_kits_dataset(num_cases, seed=_SEEDS[part], sources=realistic_sources(part))
    raise ValueError(f"demo_dataset must be one of {DEMO_DATASETS}, got {name!r}")
