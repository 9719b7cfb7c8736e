"""Folder evaluation: per-case CSV, summary JSON and box plots (``effseg evaluate``, bundle ``evaluate.json``).

Layouts understood, for both folders:

- flat NIfTI files: ``case_00012.nii.gz``, ``segmentation-12.nii`` (LiTS), ``test-segmentation-12.nii``, ...;
- one folder per case: ``case_00012/segmentation.nii.gz`` (KiTS19), ``case_00012/aggregated_MAJ_seg.nii.gz``
  (KiTS21/23), or a folder holding a single label file (MONAI ``SaveImage`` writes ``case_00012/case_00012_seg.nii.gz``).

Images (``imaging*``, ``volume-*``) are skipped. Cases are matched by the last integer in their name, so
``case_00012``, ``segmentation-12`` and ``case_00012_seg`` are the same case. Voxel size is the reference's NIfTI
``header.get_zooms()`` (array order).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from monai_effseg.data.layouts import case_number
from monai_effseg.metrics.kits import kits_case_metrics, kits_regions
from monai_effseg.metrics.lesions import IOU_THRESHOLDS, SIZE_GROUPS
from monai_effseg.metrics.lits import LITS_REGIONS, lits_case_metrics

__all__ = [
    "PROTOCOLS",
    "HEADLINE_SCORE",
    "find_cases",
    "evaluate_folders",
    "evaluate_datalist",
    "format_summary",
    "add_evaluate_arguments",
    "run_evaluate",
]

logger = logging.getLogger(__name__)

PROTOCOLS = ("kits19", "kits21", "lits")
_LABEL_FILES_IN_CASE_FOLDER = ("segmentation.nii.gz", "aggregated_MAJ_seg.nii.gz", "segmentation.nii")
_IMAGE_PREFIXES = ("imaging", "volume", "image")
# Columns that are counts for pooling, not per-case scores: summarised by sums, not by mean/median.
_COUNT_COLUMN = re.compile(r"(_vol_pred|_vol_gt|_intersection)$|^lesion_(tp|fp)_|^lesions_|^lesion_dice_sum_")


def _stem(name: str) -> str | None:
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def _is_label_file(path: Path, skip_images: bool = True) -> bool:
    stem = _stem(path.name)
    return path.is_file() and stem is not None and not (skip_images and stem.lower().startswith(_IMAGE_PREFIXES))


def _case_key(name: str) -> str:
    number = case_number(name)
    return name if number is None else str(number)


def find_cases(folder: str | Path, skip_images: bool = True) -> dict[str, tuple[str, Path]]:
    """Map case key -> (case name, label file) for every label map in ``folder`` (see the module docstring).

    ``skip_images=False`` is for prediction folders, where every file is a label map: a prediction saved under its
    image's name (LiTS ``volume-12.nii.gz``) is one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    found: dict[str, list[tuple[str, Path]]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            known = [entry / f for f in _LABEL_FILES_IN_CASE_FOLDER if (entry / f).is_file()]
            labels = known[:1] or [p for p in sorted(entry.iterdir()) if _is_label_file(p, skip_images)]
            if len(labels) != 1:
                continue  # not a case folder (or ambiguous: several label files and none of the known names)
            name, path = entry.name, labels[0]
        elif _is_label_file(entry, skip_images):
            name, path = str(_stem(entry.name)), entry
        else:
            continue
        found.setdefault(_case_key(name), []).append((name, path))
    duplicates = {k: [str(p) for _, p in v] for k, v in found.items() if len(v) > 1}
    if duplicates:
        raise ValueError(f"several label files map to the same case in {folder}: {duplicates}")
    return {k: v[0] for k, v in found.items()}


def _pair_cases(pred_dir: Path, gt_dir: Path, require_all_gt: bool) -> list[tuple[str, Path, Path]]:
    preds, gts = find_cases(pred_dir, skip_images=False), find_cases(gt_dir)
    if not gts:
        raise ValueError(f"no reference label maps found in {gt_dir}")
    extra = sorted(preds[k][0] for k in preds.keys() - gts.keys())
    missing = sorted(gts[k][0] for k in gts.keys() - preds.keys()) if require_all_gt else []
    if extra or missing or not preds:
        parts = []
        if missing:
            parts.append(f"no prediction in {pred_dir} for {missing}")
        if extra:
            parts.append(f"no reference in {gt_dir} for predictions {extra}")
        if not preds:
            parts.append(f"no predictions found in {pred_dir}")
        raise ValueError("case lists do not match: " + "; ".join(parts))
    keys = sorted(preds.keys() & gts.keys(), key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    return [(gts[k][0], preds[k][1], gts[k][1]) for k in keys]


def _check_geometry(pairs: Sequence[tuple[str, Path, Path]]) -> None:
    problems = []
    for name, pred_path, gt_path in pairs:
        pred, gt = nib.load(str(pred_path)), nib.load(str(gt_path))
        if pred.shape != gt.shape:
            problems.append(f"{name}: shape {pred.shape} (prediction) vs {gt.shape} (reference)")
        elif not np.allclose(pred.affine, gt.affine, rtol=1e-5, atol=1e-3):
            problems.append(
                f"{name}: affine differs (prediction {pred.affine.tolist()} vs reference {gt.affine.tolist()})"
            )
    if problems:
        raise ValueError(
            "prediction and reference geometries differ for {} case(s):\n  {}".format(
                len(problems), "\n  ".join(problems)
            )
        )


PROTOCOL_LABELS = {"kits19": (0, 1, 2), "kits21": (0, 1, 2, 3), "lits": (0, 1, 2)}
"""The label values a prediction may hold under each protocol."""


def check_prediction_labels(pred: np.ndarray, pred_path: str | Path, protocol: str) -> np.ndarray:
    """``pred`` as integer labels, or a ``ValueError`` naming ``pred_path`` when it holds non-integer values (a
    probability map, logits) or labels the protocol does not know (e.g. 7)."""
    if not np.issubdtype(pred.dtype, np.integer):
        if not np.all(np.isfinite(pred)) or not np.array_equal(pred, np.round(pred)):
            raise ValueError(
                f"{pred_path} holds non-integer values ({pred.dtype}, {np.nanmin(pred):.3g} to "
                f"{np.nanmax(pred):.3g}): a probability map or logits, not a label map. Save the argmax over classes "
                "(integer labels) and evaluate that."
            )
        pred = pred.astype(np.int64)
    allowed = PROTOCOL_LABELS[protocol]
    unknown = sorted(set(np.unique(pred).tolist()) - set(allowed))
    if unknown:
        raise ValueError(
            f"{pred_path} holds label(s) {unknown} outside {protocol}'s {list(allowed)}: is it a prediction for "
            f"this protocol (--protocol), with the labels in the challenge's numbering?"
        )
    return pred


def _case_metrics(protocol: str, pred_path: Path, gt_path: Path) -> dict[str, float]:
    gt_img = nib.load(str(gt_path))
    gt = np.asanyarray(gt_img.dataobj)
    pred = check_prediction_labels(np.asanyarray(nib.load(str(pred_path)).dataobj), pred_path, protocol)
    spacing = [float(z) for z in gt_img.header.get_zooms()[: gt.ndim]]
    if protocol == "lits":
        return lits_case_metrics(pred, gt, spacing)
    return kits_case_metrics(pred, gt, spacing, protocol)


def _stats(values: np.ndarray) -> dict[str, float | int | None]:
    valid = values[~np.isnan(values)]

    def num(x: float) -> float | None:
        return None if x is None or math.isnan(x) else float(x)

    return {
        "mean": num(valid.mean()) if valid.size else None,
        "std": num(valid.std(ddof=1)) if valid.size > 1 else None,
        "median": num(np.median(valid)) if valid.size else None,
        "min": num(valid.min()) if valid.size else None,
        "max": num(valid.max()) if valid.size else None,
        "n": int(valid.size),
        "n_nan": int(values.size - valid.size),
    }


def _lits_pooled(rows: list[dict[str, float]]) -> dict[str, Any]:
    def total(key: str) -> float:
        return float(sum(r[key] for r in rows))

    out: dict[str, Any] = {"dice_global": {}, "lesion_detection": {}, "tumor_size_groups": {}, "empty_cases": {}}
    for region in LITS_REGIONS:
        denominator = total(f"{region}_vol_pred") + total(f"{region}_vol_gt")
        out["dice_global"][region] = 2 * total(f"{region}_intersection") / denominator if denominator else 1.0
        out["empty_cases"][region] = {
            "reference_empty": sum(r[f"{region}_vol_gt"] == 0 for r in rows),
            "prediction_empty": sum(r[f"{region}_vol_pred"] == 0 for r in rows),
            # the official script would report ASSD = MSSD = 0 for these; we leave them out of the means
            "distances_undefined": sum(math.isnan(r[f"{region}_assd"]) for r in rows),
        }
    n_ref = total("lesions_reference")
    detection: dict[str, float | None] = {"reference_lesions": int(n_ref)}
    for key in IOU_THRESHOLDS:
        tp, fp = total(f"lesion_tp_{key}"), total(f"lesion_fp_{key}")
        detection[f"tp_{key}"], detection[f"fp_{key}"] = int(tp), int(fp)
        detection[f"recall_{key}"] = tp / n_ref if n_ref else None
        detection[f"precision_{key}"] = tp / (tp + fp) if tp + fp else None
    out["lesion_detection"] = detection
    for group in SIZE_GROUPS:
        n = total(f"lesions_{group}")
        mean = total(f"lesion_dice_sum_{group}") / n if n else None
        out["tumor_size_groups"][group] = {"lesions": int(n), "dice": mean}
    return out


def _box_plots(rows: list[dict[str, float]], protocol: str, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = list(LITS_REGIONS) if protocol == "lits" else [r.name for r in kits_regions(protocol)]
    bounded = ("dice", "voe") if protocol == "lits" else ("dice", "sd")
    written = []
    for region in regions:
        panels = [bounded] + ([("assd", "hd95", "mssd")] if protocol == "lits" else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
        for ax, metrics in zip(axes[0], panels):
            data = [np.array([r[f"{region}_{m}"] for r in rows], dtype=float) for m in metrics]
            ax.boxplot([d[~np.isnan(d)] for d in data], showmeans=True)
            ax.set_xticks(
                range(1, len(metrics) + 1),
                [f"{display_name('_' + m)[1:]} (n={int((~np.isnan(d)).sum())})" for m, d in zip(metrics, data)],
            )
            ax.set_ylabel("mm" if metrics[0] == "assd" else "score")
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{protocol}: {region} ({len(rows)} cases)")
        fig.tight_layout()
        path = out_dir / f"boxplot_{region}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


HEADLINE_SCORE = {"kits19": "composite", "kits21": "tumor_dice", "lits": "tumor_dice"}


def _evaluate_pairs(
    pairs: Sequence[tuple[str, Path, Path]], protocol: str, out_dir: str | Path | None, info: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics of every (case, prediction, reference) pair, then the summary and (with ``out_dir``) the files."""
    _check_geometry(pairs)
    rows = []
    for name, pred_path, gt_path in pairs:
        logger.info("evaluating %s", name)
        rows.append({"case": name, **_case_metrics(protocol, pred_path, gt_path)})
    columns = [k for k in rows[0] if k != "case"]
    summary: dict[str, Any] = {
        "protocol": protocol,
        "n_cases": len(rows),
        **info,
        "metrics": {
            k: _stats(np.array([r[k] for r in rows], dtype=float)) for k in columns if not _COUNT_COLUMN.search(k)
        },
    }
    if protocol == "lits":
        summary.update(_lits_pooled(rows))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "metrics_per_case.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["case", *columns])
            writer.writeheader()
            writer.writerows(rows)
        plots = _box_plots(rows, protocol, out)
        summary["files"] = {
            "per_case": str(out / "metrics_per_case.csv"),
            "summary": str(out / "metrics_summary.json"),
            "plots": [str(p) for p in plots],
        }
        (out / "metrics_summary.json").write_text(json.dumps(summary, indent=2))
    return summary, rows


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


def _refuse_dataset_as_predictions(pred_dir: Path, gt_dir: Path) -> None:
    """A prediction folder laid out like a dataset (images and labels) is the reference passed first."""
    from monai_effseg.data.layouts import DatasetLayoutError, build_datalist, detect_layout

    try:
        layout = detect_layout(pred_dir)
        items = build_datalist(pred_dir, layout)
    except (DatasetLayoutError, ValueError, OSError):
        return
    if any("label" in item for item in items):
        raise ValueError(
            f"{pred_dir} is laid out like a dataset ({layout}: images with reference labels), not a folder of "
            f"predictions: were the two folders swapped? The order is PRED_DIR GT_DIR (predictions first), e.g. "
            f"effseg evaluate {gt_dir} {pred_dir}"
        )


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    protocol: str = "kits21",
    out_dir: str | Path | None = None,
    require_all_gt: bool = True,
) -> dict[str, Any]:
    """Evaluate every prediction in ``pred_dir`` against ``gt_dir`` with a challenge protocol.

    Args:
        pred_dir: folder of predicted label maps.
        gt_dir: folder of reference label maps (flat files or KiTS case folders).
        protocol: "kits19", "kits21" or "lits".
        out_dir: where to write ``metrics_per_case.csv``, ``metrics_summary.json`` and ``boxplot_<region>.png``
            (``None``: write nothing, just return the summary).
        require_all_gt: if False, reference cases without a prediction are skipped (e.g. evaluating only the
            validation split of a dataset folder); predictions without a reference are always an error.

    Returns:
        The summary written to ``metrics_summary.json``: per metric mean/std (sample)/median/min/max/n/n_nan,
        and for LiTS the pooled global Dice, lesion detection, size-group Dice and empty-case counts.

    Raises:
        ValueError: unknown protocol, unmatched case lists, or differing shape/affine, listing the cases.
    """
    _check_protocol(protocol)
    _refuse_dataset_as_predictions(Path(pred_dir), Path(gt_dir))
    pairs = _pair_cases(Path(pred_dir), Path(gt_dir), require_all_gt)
    summary, _ = _evaluate_pairs(pairs, protocol, out_dir, {"pred_dir": str(pred_dir), "gt_dir": str(gt_dir)})
    return summary


def evaluate_datalist(
    datalist: Sequence[dict[str, Any]],
    pred_dir: str | Path,
    out_dir: str | Path | None = None,
    protocol: str = "kits21",
    overlays: bool = True,
) -> dict[str, Any]:
    """Evaluate the predictions in ``pred_dir`` of the cases of a datalist (``[{"image", "label", "case_id"}]``,
    as ``monai_effseg.data.build_datalist`` returns): what a bundle's ``evaluate.json`` runs after inference.

    Predictions are matched to ``case_id`` like :func:`evaluate_folders` matches names (last integer, so
    ``case_00012.nii.gz``, ``case_00012_seg.nii.gz`` and ``volume-12.nii.gz`` all fit). Every datalist case needs a
    prediction; other files in ``pred_dir`` are ignored. Writes the same files as :func:`evaluate_folders`, plus
    (``overlays``) PNG overlays of the best and worst case by :data:`HEADLINE_SCORE` via
    ``monai_effseg.visualize.save_best_and_worst``.
    """
    _check_protocol(protocol)
    preds = find_cases(pred_dir, skip_images=False)
    missing = [item["case_id"] for item in datalist if _case_key(str(item["case_id"])) not in preds]
    if missing:
        raise ValueError(f"no prediction in {pred_dir} for {len(missing)} datalist case(s): {missing}")
    pairs = [
        (str(item["case_id"]), preds[_case_key(str(item["case_id"]))][1], Path(item["label"])) for item in datalist
    ]
    summary, rows = _evaluate_pairs(pairs, protocol, out_dir, {"pred_dir": str(pred_dir), "datalist_cases": len(pairs)})
    if overlays and out_dir is not None and all("image" in item for item in datalist):
        from monai_effseg.visualize import LABEL_NAMES, save_best_and_worst

        key = HEADLINE_SCORE[protocol]
        cases = [
            {"case_id": name, "image": item["image"], "label": str(gt), "pred": str(pred), key: row[key]}
            for (name, pred, gt), item, row in zip(pairs, datalist, rows)
        ]
        written = save_best_and_worst(cases, key, out_dir, label_names=LABEL_NAMES.get(protocol))
        summary.setdefault("files", {})["overlays"] = [str(p) for p in written]
        (Path(out_dir) / "metrics_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``PRED_DIR GT_DIR --protocol --out --only-predicted`` to an (sub)parser for ``effseg evaluate``."""
    parser.add_argument("pred_dir", type=Path, help="folder of predicted label maps (NIfTI)")
    parser.add_argument("gt_dir", type=Path, help="folder of reference label maps (flat files or KiTS case folders)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="kits21", help="evaluation protocol")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: PRED_DIR/evaluation)")
    parser.add_argument(
        "--only-predicted", action="store_true", help="skip reference cases that have no prediction instead of failing"
    )
    return parser


def display_name(key: str) -> str:
    """A metric key as people read it: the ``_sd`` suffix (a surface Dice, not a standard deviation) spelled out.
    The keys themselves (JSON, CSV columns, ``engine.state.metrics``) keep ``_sd``."""
    return f"{key[:-3]} surface Dice" if key.endswith("_sd") else key


def format_summary(summary: dict[str, Any], out_dir: str | Path | None = None) -> str:
    """The main means of a summary, one metric a line (what ``effseg evaluate`` and the demos print)."""
    lines = [
        f"{summary['n_cases']} cases, protocol {summary['protocol']}" + (f"; results in {out_dir}" if out_dir else "")
    ]
    for key, stats in summary["metrics"].items():
        if stats["mean"] is not None:
            lines.append(
                f"  {display_name(key):32s} mean {stats['mean']:.4f}  median {stats['median']:.4f}  (n={stats['n']}, "
                f"NaN={stats['n_nan']})"
            )
    for key in ("dice_global", "lesion_detection", "tumor_size_groups"):
        if key in summary:
            lines.append(f"  {key}: {json.dumps(summary[key])}")
    for path in summary.get("files", {}).get("overlays", []):
        lines.append(f"  overlay: {path}")
    return "\n".join(lines)


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def run_evaluate(args: argparse.Namespace) -> int:
    """Run :func:`evaluate_folders` from parsed ``effseg evaluate`` arguments and print the main means."""
    out = args.out if args.out is not None else Path(args.pred_dir) / "evaluation"
    if args.out is None and _is_within(out, args.gt_dir):
        raise SystemExit(
            f"effseg evaluate: the default output folder {out} is inside the reference folder {args.gt_dir}, which "
            "is never written to by default. Pass --out with a folder outside it."
        )
    summary = evaluate_folders(args.pred_dir, args.gt_dir, args.protocol, out, require_all_gt=not args.only_predicted)
    print(format_summary(summary, out))
    return 0
