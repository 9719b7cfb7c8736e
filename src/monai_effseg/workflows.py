"""Running bundle configs from Python: what ``effseg demo`` and the demo overlays' hold-out evaluation use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

logger = logging.getLogger(__name__)


def bundle_workflow(
    bundle_root: str | Path, configs: Sequence[str], workflow_type: str = "train", **overrides: Any
) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` over ``configs`` (names in ``<bundle_root>/configs``), merged in order, like
    ``python -m monai.bundle run --config_file "[...]"``."""
    root = Path(bundle_root)
    config_dir = root / "configs"
    files = [str(config_dir / name) for name in configs]
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: no such bundle config")
    logging_file = config_dir / "logging.conf"
    return ConfigWorkflow(
        config_file=files,
        meta_file=str(config_dir / "metadata.json"),
        logging_file=str(logging_file) if logging_file.is_file() else None,
        workflow_type=workflow_type,
        bundle_root=str(root),
        **overrides,
    )


def run_bundle(bundle_root: str | Path, configs: Sequence[str], workflow_type: str = "train", **overrides: Any):
    workflow = bundle_workflow(bundle_root, configs, workflow_type, **overrides)
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()
    return workflow


def evaluate_holdout(
    bundle_root: str | Path,
    holdout_dir: str | Path,
    output_dir: str | Path,
    protocol: str = "kits21",
    overrides: dict | None = None,
    layout: str = "auto",
) -> dict:
    """Run the bundle's ``inference.json`` on a labelled hold-out set, then evaluate the written predictions
    against the original labels (challenge metrics, per-case CSV, summary JSON, plot, best/worst overlays)."""
    from monai_effseg.data import build_datalist
    from monai_effseg.metrics.report import evaluate_datalist, format_summary

    datalist = build_datalist(holdout_dir, layout)
    pred_dir = Path(output_dir) / "predictions"
    run_bundle(
        bundle_root,
        ["inference.json"],
        "inference",
        input_dir=str(holdout_dir),
        datalist=datalist,
        output_dir=str(pred_dir),
        **(overrides or {}),
    )
    summary = evaluate_datalist(datalist, pred_dir, output_dir, protocol=protocol)
    print(f"\nHold-out evaluation of {bundle_root}:\n" + format_summary(summary, output_dir), flush=True)
    return summary
