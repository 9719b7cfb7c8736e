"""Deterministic train/validation split, stored as a JSON file next to the outputs and reused on every later run.

The file holds case ids only (``{"training": [...], "validation": [...], "seed", "val_fraction", "exclude"}``), so a
dataset that moves to another disk keeps its split. The split depends only on the sorted case ids and the seed, never
on the order in which the file system lists the cases.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from monai_effseg.data.io import atomic_write_json
from monai_effseg.data.layouts import case_number, case_sort_key

__all__ = ["SplitFileError", "create_split", "exclude_cases", "load_or_create_split"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Item = Mapping[str, Any]


class SplitFileError(ValueError):
    """The split file exists but does not fit the datalist (unknown case ids or unreadable JSON)."""


def exclude_cases(items: Sequence[Item], exclude: Sequence[Union[str, int]] = ()) -> list[Item]:
    """Drops the cases named in ``exclude``.

    A string matches a case id exactly; an integer (or a string of digits) matches the number at the end of the case
    id, so Sauron's ``[15, 23, 37, 68, 125, 133]`` drops ``case_00015`` and so on.
    """
    names = {str(e) for e in exclude if not (isinstance(e, int) or str(e).isdigit())}
    numbers = {int(e) for e in exclude if isinstance(e, int) or str(e).isdigit()}
    return [item for item in items if item["case_id"] not in names and case_number(item["case_id"]) not in numbers]


def create_split(case_ids: Sequence[str], val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """Split of ``case_ids``: sorted, then permuted by ``numpy.random.default_rng(seed)``.

    ``round(n * val_fraction)`` cases go to validation, at least 1 when there are 2 or more cases and never all.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(set(case_ids), key=case_sort_key)
    n = len(ordered)
    n_val = int(round(n * val_fraction))
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    permuted = [ordered[i] for i in np.random.default_rng(seed).permutation(n)]
    validation = sorted(permuted[:n_val], key=case_sort_key)
    training = sorted(permuted[n_val:], key=case_sort_key)
    return {"training": training, "validation": validation}


def _read_split(split_file: Path) -> dict[str, list[str]]:
    try:
        stored = json.loads(split_file.read_text(encoding="utf-8"))
        return {"training": list(stored["training"]), "validation": list(stored["validation"])}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SplitFileError(
            f"split file {split_file} is unreadable ({type(err).__name__}: {err}); delete it to create a new split"
        ) from err


def load_or_create_split(
    datalist: Sequence[Item],
    split_file: PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
    exclude: Sequence[Union[str, int]] = (),
) -> dict[str, list[Item]]:
    """``{"training": [...], "validation": [...]}`` datalists, from ``split_file`` when it exists, else a new split.

    Args:
        datalist: items with a ``"case_id"`` (see :func:`monai_effseg.data.build_datalist`).
        split_file: JSON file; written atomically when missing.
        val_fraction: share of cases for validation (a new split only).
        seed: permutation seed (a new split only).
        exclude: case ids (or case numbers) to leave out; see :func:`exclude_cases`. Also applied to a reused file.

    Raises:
        SplitFileError: the stored split names case ids that are not in ``datalist``.
    """
    split_file = Path(split_file)
    kept = exclude_cases(datalist, exclude)
    by_id = {item["case_id"]: item for item in kept}
    excluded_ids = {item["case_id"] for item in datalist} - set(by_id)
    if split_file.is_file():
        stored = _read_split(split_file)
        unknown = [c for c in stored["training"] + stored["validation"] if c not in by_id and c not in excluded_ids]
        if unknown:
            raise SplitFileError(
                f"split file {split_file} names {len(unknown)} case(s) that are not in the dataset: "
                f"{sorted(unknown, key=case_sort_key)[:20]}; it was made for another dataset. Delete it (or point "
                "the split file elsewhere) to create a new split"
            )
        dropped = [c for c in stored["training"] + stored["validation"] if c in excluded_ids]
        if dropped:
            logger.warning("%s: leaving out excluded case(s) %s", split_file, dropped)
        unused = set(by_id) - set(stored["training"]) - set(stored["validation"])
        if unused:
            logger.warning("%s: %d dataset case(s) are in neither subset and stay unused", split_file, len(unused))
        logger.info("reusing split %s", split_file)
    else:
        stored = create_split(list(by_id), val_fraction=val_fraction, seed=seed)
        record = {
            "seed": seed,
            "val_fraction": val_fraction,
            "exclude": [e if isinstance(e, int) else str(e) for e in exclude],
            **stored,
        }
        atomic_write_json(split_file, record)
        logger.info("wrote split %s (%d training, %d validation)", split_file, *map(len, stored.values()))
    return {key: [dict(by_id[c]) for c in stored[key] if c in by_id] for key in ("training", "validation")}
