"""Dataset adapters: turn a dataset folder in its own published layout into a MONAI datalist.

Every adapter returns ``[{"image": path, "label": path, "case_id": str}, ...]`` sorted by case id (numerically where
the id has a number), so the order never depends on the file system. A folder that matches no layout, or matches one
but holds no case, raises a single :class:`DatasetLayoutError` that names the folder and lists every layout.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, Union

from monai.data import load_decathlon_datalist

__all__ = [
    "IMAGE_SUFFIXES",
    "KITS19_TEST_CASES",
    "LAYOUTS",
    "DatasetLayoutError",
    "build_datalist",
    "case_sort_key",
    "detect_layout",
    "strip_image_suffix",
    "case_id_from_path",
    "case_number",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Datalist = list[dict[str, str]]
# An adapter returns every case it finds plus, for the cases without a label, the label path it expected.
Found = tuple[Datalist, dict[str, str]]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")

LAYOUTS: dict[str, str] = {
    "kits19": "case_XXXXX/imaging.nii.gz + case_XXXXX/segmentation.nii.gz (KiTS19, optionally under data/)",
    "kits21": "case_XXXXX/imaging.nii.gz + case_XXXXX/aggregated_MAJ_seg.nii.gz (KiTS21 and KiTS23, "
    "optionally under dataset/)",
    "lits": "volume-N.nii[.gz] + segmentation-N.nii[.gz] (LiTS, possibly inside batch sub-folders)",
    "msd": "dataset.json with a 'training' list (Medical Segmentation Decathlon, nnU-Net raw v1) or with "
    "'file_ending' and imagesTr/ + labelsTr/ (nnU-Net raw v2)",
    "folder": "images/ + labels/ (or imagesTr/ + labelsTr/) with matching file names (.nii, .nii.gz, .nrrd, .mha)",
}
_ALIASES = {"kits23": "kits21", "nnunet": "msd", "decathlon": "msd"}

# The KiTS19 repository ships the unlabelled test cases next to the training cases; they are not a layout error.
KITS19_TEST_CASES = frozenset(f"case_{i:05d}" for i in range(210, 300))

_KITS_CASE = re.compile(r"^case_\d+$")
_LITS_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")
_NNUNET_CHANNEL = re.compile(r"_0000$")


class DatasetLayoutError(ValueError):
    """The dataset folder is missing, empty, in no known layout, or has cases without a label."""


def _expected_layouts() -> str:
    return "\n".join(f"  {name:7s} {description}" for name, description in LAYOUTS.items())


def _layout_error(dataset_dir: Path, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"dataset_dir {dataset_dir.absolute()}: {problem}. Expected one of these layouts:\n{_expected_layouts()}"
    )


def strip_image_suffix(name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> str:
    """``"case_1.nii.gz"`` -> ``"case_1"`` for every suffix in ``suffixes``."""
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id_from_path(path: str | Path) -> str:
    """``.../case_00007/imaging.nii.gz`` -> ``case_00007``; ``.../volume-12.nii`` -> ``volume-12``: the file name
    without its image suffix, or the folder's name for layouts that keep one case per folder and name the file
    generically."""
    path = Path(path)
    name = strip_image_suffix(path.name, IMAGE_SUFFIXES + (".dcm",))
    return path.parent.name if name in ("imaging", "image", "ct") else name


def case_number(case_id: str) -> int | None:
    """The last number in a case id or file name (``case_00015`` -> 15, ``segmentation-12`` -> 12), if any."""
    digits = re.findall(r"\d+", case_id)
    return int(digits[-1]) if digits else None


def case_sort_key(case_id: str) -> tuple:
    """Natural order: ``volume-2`` before ``volume-10``; ids without digits sort by name."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", case_id))


def _sorted(items: Datalist) -> Datalist:
    return sorted(items, key=lambda item: case_sort_key(item["case_id"]))


def _is_image(path: Path) -> bool:
    return path.is_file() and strip_image_suffix(path.name) != path.name


# ----------------------------------------------------------------------------------------------------- KiTS


def _kits_root(dataset_dir: Path) -> Optional[Path]:
    for root in (dataset_dir, dataset_dir / "data", dataset_dir / "dataset"):
        if root.is_dir() and any(_KITS_CASE.match(p.name) and (p / "imaging.nii.gz").is_file() for p in root.iterdir()):
            return root
    return None


def _kits_datalist(dataset_dir: Path, label_name: str) -> Found:
    root = _kits_root(dataset_dir) or dataset_dir
    items, missing = [], {}
    for case_dir in root.iterdir():
        image = case_dir / "imaging.nii.gz"
        if not (_KITS_CASE.match(case_dir.name) and image.is_file()):
            continue
        label = case_dir / label_name
        item = {"image": str(image), "case_id": case_dir.name}
        if label.is_file():
            item["label"] = str(label)
        else:
            missing[case_dir.name] = str(label)
        items.append(item)
    return items, missing


def _kits19(dataset_dir: Path) -> Found:
    return _kits_datalist(dataset_dir, "segmentation.nii.gz")


def _kits21(dataset_dir: Path) -> Found:
    return _kits_datalist(dataset_dir, "aggregated_MAJ_seg.nii.gz")


# ----------------------------------------------------------------------------------------------------- LiTS


def _lits_volumes(dataset_dir: Path) -> list[Path]:
    return [p for p in dataset_dir.rglob("volume-*.nii*") if _LITS_VOLUME.match(p.name) and p.is_file()]


def _lits(dataset_dir: Path) -> Found:
    # The label usually sits next to its volume; some re-packagings keep the labels in a parallel folder.
    anywhere = {p.name: p for p in sorted(dataset_dir.rglob("segmentation-*.nii*")) if p.is_file()}
    items, missing = [], {}
    for volume in _lits_volumes(dataset_dir):
        number = _LITS_VOLUME.match(volume.name).group(1)  # type: ignore[union-attr]
        names = [f"segmentation-{number}{ext}" for ext in (".nii", ".nii.gz")]
        beside = [volume.with_name(name) for name in names if volume.with_name(name).is_file()]
        label = beside[0] if beside else next((anywhere[name] for name in names if name in anywhere), None)
        item = {"image": str(volume), "case_id": f"volume-{number}"}
        if label is None:
            missing[item["case_id"]] = str(volume.with_name(f"segmentation-{number}.nii"))
        else:
            item["label"] = str(label)
        items.append(item)
    return items, missing


# ----------------------------------------------------------------------------------------------------- MSD


def _nnunet_v1_image(path: Path) -> Path:
    # nnU-Net raw v1 lists "imagesTr/x.nii.gz" in dataset.json while the file on disk is "imagesTr/x_0000.nii.gz".
    if path.exists():
        return path
    name = strip_image_suffix(path.name)
    suffix = path.name[len(name) :]
    channel0 = path.with_name(f"{name}_0000{suffix}")
    return channel0 if channel0.exists() else path


def _msd(dataset_dir: Path) -> Found:
    spec_file = dataset_dir / "dataset.json"
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _layout_error(dataset_dir, f"cannot read {spec_file} ({err})") from err
    if "training" in spec:
        entries = load_decathlon_datalist(str(spec_file), is_segmentation=True, data_list_key="training")
        items, missing = [], {}
        for entry in entries:
            image = _nnunet_v1_image(Path(entry["image"]))
            label = Path(entry["label"])
            item = {"image": str(image), "case_id": strip_image_suffix(Path(entry["image"]).name)}
            if label.is_file():
                item["label"] = str(label)
            else:
                missing[item["case_id"]] = str(label)
            items.append(item)
        return items, missing
    if "file_ending" in spec:
        ending = spec["file_ending"]
        items, missing = [], {}
        for image in (dataset_dir / "imagesTr").glob(f"*_0000{ending}"):
            case_id = image.name[: -len(f"_0000{ending}")]
            label = dataset_dir / "labelsTr" / f"{case_id}{ending}"
            item = {"image": str(image), "case_id": case_id}
            if label.is_file():
                item["label"] = str(label)
            else:
                missing[case_id] = str(label)
            items.append(item)
        return items, missing
    raise _layout_error(dataset_dir, f"{spec_file} has neither a 'training' list nor a 'file_ending' entry")


# ----------------------------------------------------------------------------------------------------- folder


def _folder_dirs(dataset_dir: Path) -> Optional[tuple[Path, Path]]:
    for images, labels in (("images", "labels"), ("imagesTr", "labelsTr")):
        if (dataset_dir / images).is_dir() and (dataset_dir / labels).is_dir():
            return dataset_dir / images, dataset_dir / labels
    return None


def _folder(dataset_dir: Path) -> Found:
    dirs = _folder_dirs(dataset_dir)
    if dirs is None:
        return [], {}
    image_dir, label_dir = dirs
    labels = {strip_image_suffix(p.name): p for p in label_dir.iterdir() if _is_image(p)}
    items, missing = [], {}
    for image in image_dir.iterdir():
        if not _is_image(image):
            continue
        case_id = _NNUNET_CHANNEL.sub("", strip_image_suffix(image.name))
        item = {"image": str(image), "case_id": case_id}
        label = labels.get(case_id) or labels.get(strip_image_suffix(image.name))
        if label is None:
            missing[case_id] = f"{label_dir / image.name} (no file named {case_id}.* in {label_dir})"
        else:
            item["label"] = str(label)
        items.append(item)
    return items, missing


_ADAPTERS: dict[str, Callable[[Path], Found]] = {
    "kits19": _kits19,
    "kits21": _kits21,
    "lits": _lits,
    "msd": _msd,
    "folder": _folder,
}


def _normalise_layout(layout: str) -> str:
    key = layout.lower()
    key = _ALIASES.get(key, key)
    if key not in _ADAPTERS and key != "auto":
        raise DatasetLayoutError(f"unknown layout {layout!r}; expected 'auto' or one of:\n{_expected_layouts()}")
    return key


def detect_layout(dataset_dir: PathLike) -> str:
    """Name of the layout of ``dataset_dir`` (a key of :data:`LAYOUTS`); raises :class:`DatasetLayoutError`."""
    dataset_dir = Path(dataset_dir).expanduser()
    if not dataset_dir.is_dir():
        problem = "is not a directory" if dataset_dir.exists() else "does not exist"
        raise _layout_error(dataset_dir, problem)
    if (dataset_dir / "dataset.json").is_file():
        return "msd"
    root = _kits_root(dataset_dir)
    if root is not None:
        majority = any((case / "aggregated_MAJ_seg.nii.gz").is_file() for case in root.iterdir())
        return "kits21" if majority else "kits19"
    if _folder_dirs(dataset_dir) is not None:
        return "folder"
    if _lits_volumes(dataset_dir):
        return "lits"
    if not any(dataset_dir.iterdir()):
        raise _layout_error(dataset_dir, "is empty")
    raise _layout_error(dataset_dir, "matches no known dataset layout")


def build_datalist(dataset_dir: PathLike, layout: str = "auto", require_labels: bool = True) -> Datalist:
    """Datalist ``[{"image", "label", "case_id"}, ...]`` of a dataset folder in its own published layout.

    Args:
        dataset_dir: the dataset's root folder.
        layout: one of :data:`LAYOUTS` (``"kits23"`` is an alias of ``"kits21"``), or ``"auto"`` to detect it.
        require_labels: when ``True`` a case without its label file is an error (the message names each missing
            file); when ``False`` such cases are returned without a ``"label"`` key. The unlabelled KiTS19 test cases
            210-299 are always skipped when labels are required.

    Raises:
        DatasetLayoutError: missing or empty folder, unknown layout, no case found, or (with ``require_labels``)
            cases without labels. One error lists everything.
    """
    dataset_dir = Path(dataset_dir).expanduser()
    key = _normalise_layout(layout)
    if key == "auto":
        key = detect_layout(dataset_dir)
    elif not dataset_dir.is_dir():
        raise _layout_error(dataset_dir, "is not a directory" if dataset_dir.exists() else "does not exist")
    items, missing = _ADAPTERS[key](dataset_dir)
    if key == "kits19" and require_labels:
        test_cases = sorted(set(missing) & KITS19_TEST_CASES)
        if test_cases:
            logger.info("%s: skipping %d unlabelled KiTS19 test cases", dataset_dir, len(test_cases))
        items = [item for item in items if item["case_id"] not in test_cases]
        missing = {case: path for case, path in missing.items() if case not in test_cases}
    if not items:
        raise _layout_error(dataset_dir, f"holds no case of the requested layout {key!r} ({LAYOUTS[key]})")
    if missing and require_labels:
        listed = "\n".join(f"  - {case}: {missing[case]}" for case in sorted(missing, key=case_sort_key))
        raise DatasetLayoutError(
            f"dataset_dir {dataset_dir} ({key} layout): {len(missing)} case(s) have no label file:\n{listed}"
        )
    duplicates = sorted(i for i, n in Counter(item["case_id"] for item in items).items() if n > 1)
    if duplicates:
        raise DatasetLayoutError(f"dataset_dir {dataset_dir} ({key} layout): duplicate case ids {duplicates}")
    return _sorted(items)
