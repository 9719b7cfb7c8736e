"""Running bundle configs from Python: what ``effseg demo`` and the demo overlays' hold-out evaluation use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

logger = logging.getLogger(__name__)


_LITERAL_PLACEHOLDER = "$None"
"""What a literal's id holds in the raw config: an expression, so that a config item containing the id (a nested id
such as ``train#dataset#data``) takes the resolved value instead of re-reading its raw text."""


def _inject_literals(parser: ConfigParser, literals: dict[str, Any]) -> None:
    """Make ``parser`` resolve each id of ``literals`` to that Python object, never parsing it.

    MONAI's parser evaluates strings starting with ``$``, resolves ``@`` references and ``%`` macros, recursively
    inside lists and dicts, so a file name such as ``$print(1).nii.gz`` passed as an override would run. The raw
    config gets a placeholder; each (re)parse then puts the object itself into the resolver's resolved content,
    which is what every ``@id`` reference reads.
    """
    if not literals:
        return
    parser.update({key: _LITERAL_PLACEHOLDER for key in literals})
    parse = parser.parse

    def parse_then_inject(reset: bool = True) -> None:
        parse(reset=reset)
        parser.ref_resolver.resolved_content.update(literals)

    parser.parse = parse_then_inject  # type: ignore[method-assign]


def bundle_workflow(
    bundle_root: str | Path,
    configs: Sequence[str],
    workflow_type: str = "train",
    literals: dict[str, Any] | None = None,
    **overrides: Any,
) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` over ``configs`` (names in ``<bundle_root>/configs``), merged in order, like
    ``python -m monai.bundle run --config_file "[...]"``.

    ``overrides`` are config text, parsed like command-line ``--key value`` pairs (``"$@train#trainer.run()"`` is
    an expression). ``literals`` are Python values used as they are: paths, file names, datalists, anything read
    from disk or already resolved by another parser goes there (``bundle_root`` always does).
    """
    root = Path(bundle_root)
    config_dir = root / "configs"
    files = [str(config_dir / name) for name in configs]
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: no such bundle config")
    clash = sorted(set(overrides) & set(literals or {}))
    if clash:
        raise ValueError(f"{clash} given both as config overrides and as literals")
    logging_file = config_dir / "logging.conf"
    workflow = ConfigWorkflow(
        config_file=files,
        meta_file=str(config_dir / "metadata.json"),
        logging_file=str(logging_file) if logging_file.is_file() else None,
        workflow_type=workflow_type,
        **overrides,
    )
    _inject_literals(workflow.parser, {"bundle_root": str(root), **(literals or {})})
    return workflow


def run_bundle(
    bundle_root: str | Path,
    configs: Sequence[str],
    workflow_type: str = "train",
    literals: dict[str, Any] | None = None,
    **overrides: Any,
):
    """Initialise, run and finalise :func:`bundle_workflow` (same arguments)."""
    workflow = bundle_workflow(bundle_root, configs, workflow_type, literals, **overrides)
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
    configs: Sequence[str] = ("inference.json",),
) -> dict:
    """Run the bundle's ``inference.json`` (or the ``configs`` overlay list, e.g. ``inference_fast.json`` after it)
    on a labelled hold-out set, then evaluate the written predictions against the original labels (challenge
    metrics, per-case CSV, summary JSON, plot, best/worst overlays)."""
    from monai_effseg.data import build_datalist
    from monai_effseg.metrics.report import evaluate_datalist, format_summary

    datalist = build_datalist(holdout_dir, layout)
    pred_dir = Path(output_dir) / "predictions"
    # the case ids and paths come from file names, and ``overrides`` were resolved by the caller's parser: both go in
    # as literals, never as config text (a case named "$print(1)" must stay a name)
    literals = {**(overrides or {}), "input_dir": str(holdout_dir), "datalist": datalist, "output_dir": str(pred_dir)}
    run_bundle(bundle_root, list(configs), "inference", literals=literals)
    summary = evaluate_datalist(datalist, pred_dir, output_dir, protocol=protocol)
    name = Path(bundle_root).resolve().name  # "." when run from inside the bundle folder
    print(
        f"\nHold-out evaluation of {name} ({len(datalist)} cases in {holdout_dir}):\n"
        + format_summary(summary, output_dir),
        flush=True,
    )
    return summary
