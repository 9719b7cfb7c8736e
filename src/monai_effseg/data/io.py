"""Crash-safe outputs and batch-inference inputs.

Atomic writers put the data in a temporary file in the target's directory and ``os.replace`` it onto the target, so a
reader (or a resumed run) sees either the old file or the complete new one, never a half-written NIfTI. The temporary
name keeps the target's suffix (``.nii.gz``, ``.nrrd``) because nibabel and ITK choose format and compression from it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

from monai.data import ITKWriter, NibabelWriter

from monai_effseg.data.layouts import IMAGE_SUFFIXES, case_sort_key, strip_image_suffix
from monai_effseg.data.validation import DataValidationError, inspect_image, is_dicom_file

__all__ = [
    "AtomicITKWriter",
    "AtomicNibabelWriter",
    "InferenceDatalist",
    "OutputLocationError",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "inference_datalist",
    "is_dicom_file",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def _full_suffix(path: Path) -> str:
    stem = strip_image_suffix(path.name)
    return path.name[len(stem) :] if stem != path.name else path.suffix


@contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``target`` (same suffix); on success it replaces ``target``, on error it is
    removed and ``target`` is left untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = _full_suffix(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    tmp = target.with_name(f".{stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Writes ``text`` to ``path`` atomically (and fsyncs it, so a power cut cannot leave an empty file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding) as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
    return Path(path)


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """Writes ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` with an atomic ``write``; use it as ``SaveImaged(..., writer=AtomicNibabelWriter)``."""

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        if verbose:  # name the real target, not the temporary file
            logger.info("writing: %s", filename)
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=False, **obj_kwargs)


class AtomicITKWriter(ITKWriter):
    """MONAI's ``ITKWriter`` (NRRD, MHA, NIfTI through ITK) with an atomic ``write``."""

    def write(self, filename: PathLike, verbose: bool = False, **kwargs: Any) -> None:
        if verbose:
            logger.info("writing: %s", filename)
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=False, **kwargs)


def _find_inputs(input_dir: Path) -> list[tuple[str, Path]]:
    """``(case_id, path)`` for every image file and every folder holding a DICOM series under ``input_dir``."""
    found = []
    for folder, dirnames, filenames in os.walk(input_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder_path = Path(folder)
        relative = folder_path.relative_to(input_dir)
        files = [folder_path / name for name in sorted(filenames) if not name.startswith(".")]
        images = [p for p in files if strip_image_suffix(p.name) != p.name]
        for image in images:
            case = strip_image_suffix(image.name)
            found.append(("_".join((*relative.parts, case)), image))
        if any(is_dicom_file(p) for p in files if p not in images):
            # MONAI's ITKReader reads the whole series from its folder.
            found.append(("_".join(relative.parts) or input_dir.name, folder_path))
    return found


def _make_ids_unique(items: list[dict[str, str]]) -> None:
    # "a.nii" and "a.nii.gz" in one folder would otherwise write to the same output file.
    seen: dict[str, int] = {}
    for item in items:
        count = seen.get(item["case_id"], 0)
        seen[item["case_id"]] = count + 1
        if count:
            item["case_id"] = f"{item['case_id']}_{count + 1}"


class InferenceDatalist(list):
    """The datalist of :func:`inference_datalist` (a plain ``list`` of items) that also remembers what was left out
    and what looked doubtful: ``skipped`` and ``warnings`` hold one ``"<file>: <reason>"`` line each, for the run's
    closing summary (:class:`monai_effseg.handlers.InferenceSummary`)."""

    def __init__(self, items=(), skipped=(), warnings=()):
        super().__init__(items)
        self.skipped: list[str] = list(skipped)
        self.warnings: list[str] = list(warnings)


class OutputLocationError(ValueError):
    """The output folder would overwrite an input, or cannot be written."""


def check_output_dir(output_dir: PathLike, input_dir: PathLike, output_names: Sequence[tuple[str, Path]] = ()) -> Path:
    """Refuses, before anything is computed, an output folder that is (or is inside) the input folder, that is a
    file, that cannot be created or written, or any output file ``output_dir/<name>`` that is an input file; creates
    the folder. ``output_names`` are ``(file name, input path)`` pairs. Returns the folder.

    Raises:
        OutputLocationError: naming the path and what to pass instead.
    """
    out = Path(output_dir).expanduser()
    inp = Path(input_dir).expanduser()
    out_real, in_real = out.resolve(), inp.resolve()
    input_folder = in_real if inp.is_dir() else in_real.parent
    fix = f"pass another --output_dir, e.g. {input_folder.parent / (input_folder.name + '_segmentations')}"
    if inp.is_dir() and (out_real == in_real or in_real in out_real.parents):
        where = "is" if out_real == in_real else "is inside"
        raise OutputLocationError(
            f"output_dir {out} {where} the input folder {inp}: the label maps would replace the CT scans of the same "
            f"name, or be read as scans by the next run; {fix}"
        )
    for name, source in output_names:
        target = (out_real / name).resolve()
        if target == Path(source).resolve():
            raise OutputLocationError(f"output file {out / name} would overwrite the input {source}; {fix}")
    if out.exists() and not out.is_dir():
        raise OutputLocationError(f"output_dir {out} is a file, not a folder; {fix}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".effseg-write-test-"):
            pass
    except OSError as err:
        raise OutputLocationError(
            f"output_dir {out} cannot be written ({type(err).__name__}: {err.strerror or err}); pass a writable "
            "--output_dir"
        ) from None
    return out


def inference_datalist(
    input_dir: PathLike,
    validate: bool = True,
    output_dir: Optional[PathLike] = None,
    fingerprint: Optional[Mapping[str, Any]] = None,
    output_postfix: str = "",
) -> InferenceDatalist:
    """Datalist ``[{"image": path, "case_id": str}, ...]`` for batch inference over ``input_dir``.

    Finds NIfTI (``.nii``, ``.nii.gz``), NRRD, MHA/MHD files and DICOM series (a folder of DICOM files is one case),
    recursively; ``input_dir`` may also be a single image file. With ``output_dir`` the output location is checked
    first (:func:`check_output_dir`: never an input file or the input folder, writable), before any input is read.
    With ``validate`` each input is read and checked (readable, 3D, finite, CT range, air, DICOM slice spacing; see
    :mod:`monai_effseg.data.validation`): a bad input is logged as an error naming the file and skipped, so the rest
    of the batch still runs; the skipped inputs are kept in the result's ``skipped`` for the run's summary. With
    ``fingerprint`` a spacing or field of view far from the training data is logged as a warning (``warnings``).

    Raises:
        FileNotFoundError: ``input_dir`` does not exist.
        OutputLocationError: ``output_dir`` would overwrite an input or cannot be written.
        DataValidationError: no valid input remains (the message lists every problem found).
    """
    input_dir = Path(input_dir).expanduser()
    if not input_dir.exists():
        raise FileNotFoundError(f"input_dir {input_dir} does not exist")
    if input_dir.is_file():
        found = [(strip_image_suffix(input_dir.name), input_dir)]
    else:
        found = _find_inputs(input_dir)
    if not found:
        raise DataValidationError(
            [f"{input_dir}: no image found (expected {', '.join(IMAGE_SUFFIXES)} files or DICOM-series folders)"],
            "inference input",
        )
    found = sorted(found, key=lambda entry: case_sort_key(entry[0]))
    if output_dir is not None:
        unique = [{"case_id": case_id, "image": str(path)} for case_id, path in found]
        _make_ids_unique(unique)
        names = [(f"{item['case_id']}{output_postfix}.nii.gz", Path(item["image"])) for item in unique]
        check_output_dir(output_dir, input_dir, names)
    items, problems, warnings = [], [], []
    for case_id, path in found:
        case_problems, case_warnings = inspect_image(path, fingerprint) if validate else ([], [])
        if case_problems:
            for problem in case_problems:
                logger.error("skipping input: %s", problem)
            problems += case_problems
            continue
        for warning in case_warnings:
            logger.warning("doubtful input: %s", warning)
        warnings += case_warnings
        items.append({"image": str(path), "case_id": case_id})
    _make_ids_unique(items)
    if not items:
        raise DataValidationError(problems, "inference input (no valid image left)")
    return InferenceDatalist(items, problems, warnings)
