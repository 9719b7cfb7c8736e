"""Data layer: dataset adapters, deterministic splits, fingerprints, validation, synthetic phantoms, a realistic
synthetic KiTS dataset around real label maps, atomic IO."""

from __future__ import annotations

from monai_effseg.data.demo import DEMO_DATASETS, demo_dataset, demo_run_name
from monai_effseg.data.fingerprint import (
    DEFAULT_FINGERPRINTS,
    compute_fingerprint,
    intensity_normalization,
    load_fingerprint,
    load_or_compute_fingerprint,
)
from monai_effseg.data.io import (
    AtomicITKWriter,
    AtomicNibabelWriter,
    InferenceDatalist,
    OutputLocationError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    inference_datalist,
)
from monai_effseg.data.layouts import (
    LAYOUTS,
    DatasetLayoutError,
    build_datalist,
    case_id_from_path,
    case_number,
    detect_layout,
)
from monai_effseg.data.realistic import default_labels_dir, realistic_kits_dataset
from monai_effseg.data.split import SplitFileError, create_split, exclude_cases, load_or_create_split
from monai_effseg.data.synthetic import default_cache_dir, synthetic_classes, synthetic_dataset
from monai_effseg.data.validation import (
    DataValidationError,
    inspect_image,
    read_volume,
    validate_case,
    validate_datalist,
    validate_image,
)

__all__ = [
    "DEFAULT_FINGERPRINTS",
    "DEMO_DATASETS",
    "LAYOUTS",
    "AtomicITKWriter",
    "AtomicNibabelWriter",
    "DataValidationError",
    "DatasetLayoutError",
    "InferenceDatalist",
    "OutputLocationError",
    "SplitFileError",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "build_datalist",
    "case_id_from_path",
    "case_number",
    "check_output_dir",
    "compute_fingerprint",
    "create_split",
    "default_cache_dir",
    "default_labels_dir",
    "demo_dataset",
    "demo_run_name",
    "detect_layout",
    "exclude_cases",
    "inference_datalist",
    "inspect_image",
    "intensity_normalization",
    "load_fingerprint",
    "load_or_compute_fingerprint",
    "load_or_create_split",
    "read_volume",
    "realistic_kits_dataset",
    "synthetic_classes",
    "synthetic_dataset",
    "validate_case",
    "validate_datalist",
    "validate_image",
]
from monai_effseg.data.pipeline import (  # noqa: E402
    augment_on_device,
    cached_dataset,
    dataloader,
    default_num_workers,
    split_transform,
    transform_hash,
)

__all__ += ["augment_on_device", "cached_dataset", "dataloader", "default_num_workers", "split_transform",
            "transform_hash"]  # fmt: skip
