"""What ``effseg demo BUNDLE`` will take and write, for its start banner and ``effseg demo --help``.

Imports neither torch nor MONAI (``effseg --help`` builds its parser from this module). The expected durations are
not typed in anywhere: they are estimated from the ``demos`` section of ``docs/benchmarks.json``, which
``python benchmarks/run_all.py --sections demos`` re-measures. That run caps each demo's time and validates every
epoch, so the estimate scales its measured time per training epoch and per validation to the demo's own
``max_epochs`` and ``val_interval`` (read from ``configs/demo.json``) and adds what it measured outside the epochs
(data set generation, caching, the hold-out evaluation).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUNDLES_DIR = REPO / "bundles"
BENCHMARKS_JSON = REPO / "docs" / "benchmarks.json"
MEASURE_COMMAND = "python benchmarks/run_all.py --sections demos"

DEMO_DATASETS = ("phantoms", "realistic")
# What each demo dataset is, and what the hold-out tumour Dice it yields says (printed before and after a demo).
DATASET_NOTES = {
    "phantoms": (
        "the embedded ellipsoid phantoms (fast; what the tests use)",
        "tumour Dice on the phantoms is optimistic: their tumours are clear ellipsoids, much easier than real ones; "
        "for a KiTS bundle, 'effseg demo BUNDLE --dataset realistic' gives a tumour figure closer to real CT "
        "(docs/realistic_data.md)",
    ),
    "realistic": (
        "the realistic KiTS dataset: CT-like cases around real KiTS19 label maps (docs/realistic_data.md)",
        "the hold-out cases come from 3 patients whose label maps the training never saw, with tumour-to-kidney "
        "contrasts from 10 to 110 HU: their tumour Dice measures tumours the network has not seen, on synthetic "
        "intensities (no real texture, one contrast phase); it is not a KiTS19 leaderboard figure",
    ),
}

# Relative to the bundle folder, as configs/demo.json sets ``ckpt_dir`` and ``output_dir`` (``{run}``: demo_run_name).
DEMO_OUTPUTS = (
    (
        "models/{run}/",
        "checkpoints: model.pt (best validation Dice), the latest checkpoint_epoch=N.pt, fingerprint.json",
    ),
    (
        "eval/{run}/holdout/",
        "hold-out evaluation: metrics_per_case.csv, metrics_summary.json, boxplot_*.png, "
        "overlay_best.png / overlay_worst.png, predictions/",
    ),
    ("eval/{run}/runs/", "TensorBoard logs"),
    ("eval/{run}/split.json", "the training / validation split"),
    ("eval/{run}/cache/", "the preprocessed-data cache"),
)


def demo_run_name(dataset: str) -> str:
    """The folder name of a demo's checkpoints and outputs (``models/<it>``, ``eval/<it>``): ``demo`` for the
    phantoms, ``demo_<dataset>`` otherwise, so that one dataset's run never resumes from another's checkpoint."""
    if dataset not in DEMO_DATASETS:
        raise ValueError(f"demo_dataset must be one of {DEMO_DATASETS}, got {dataset!r}")
    return "demo" if dataset == "phantoms" else f"demo_{dataset}"


def demo_phantoms(bundle_root: Path) -> str | None:
    """The bundle's ``demo_phantoms`` (``kits21``, ``kits19`` or ``lits``) from ``configs/demo.json``."""
    try:
        value = json.loads((Path(bundle_root) / "configs" / "demo.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value.get("demo_phantoms") if isinstance(value.get("demo_phantoms"), str) else None


def synthetic_cache_dir() -> Path:
    """Where the synthetic data set is generated (``monai_effseg.data.synthetic.default_cache_dir``, without
    importing it: that package imports torch)."""
    return Path(os.environ.get("EFFSEG_CACHE") or Path.home() / ".cache" / "monai_effseg").expanduser()


def checkpoint_epoch(ckpt_dir: Path) -> int | None:
    """The newest ``checkpoint_epoch=N.pt`` in ``ckpt_dir`` (what ``ResumeFromLatest`` resumes from), or ``None``."""
    epochs = [
        int(m.group(1))
        for p in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt")
        if (m := re.search(r"checkpoint_epoch=(\d+)\.pt$", p.name))
    ]
    return max(epochs) if epochs else None


def demo_bundles(bundles_dir: Path = BUNDLES_DIR) -> list[str]:
    """Names of the bundles that have a CPU demo (``configs/demo.json``)."""
    if not bundles_dir.is_dir():
        return []
    return sorted(p.name for p in bundles_dir.iterdir() if (p / "configs" / "demo.json").is_file())


def load_demo_results(path: Path = BENCHMARKS_JSON) -> dict[str, Any] | None:
    """The ``demos`` section of ``docs/benchmarks.json`` (``None`` when the file or the section is missing)."""
    try:
        section = json.loads(Path(path).read_text(encoding="utf-8"))["sections"]["demos"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if section.get("status") != "ok" or not isinstance(section.get("data"), dict):
        return None
    return section


def _demo_int(bundle_root: Path, key: str) -> int | None:
    """``key`` of ``configs/demo.json`` when it is a plain integer (not a ``$`` expression)."""
    try:
        value = json.loads((bundle_root / "configs" / "demo.json").read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def expected_demo_seconds(
    bundle: str, results: dict[str, Any] | None = None, bundles_dir: Path = BUNDLES_DIR
) -> float | None:
    """Estimated wall time of the whole demo (training, validation, hold-out evaluation) on the measuring machine,
    or ``None`` when ``docs/benchmarks.json`` has no usable run of this bundle."""
    results = load_demo_results() if results is None else results
    if not results:
        return None
    run = results["data"].get("bundles", {}).get(bundle)
    if not run or run.get("run_error") or not run.get("stages"):
        return None
    bench_interval = max(1, int(results["data"].get("val_interval", 1)))
    max_epochs = _demo_int(bundles_dir / bundle, "max_epochs")
    val_interval = _demo_int(bundles_dir / bundle, "val_interval") or 1
    total = float(run["wall_s"])
    for stage in run["stages"]:
        epochs = int(stage["epochs"])
        if epochs < 1:
            return None
        planned = max_epochs or int(stage["max_epochs"])
        per_epoch = float(stage["train_s"]) / epochs
        per_validation = float(stage["validation_s"]) / max(1, epochs // bench_interval)
        total += per_epoch * planned + per_validation * (planned // val_interval)
        total -= float(stage["train_s"]) + float(stage["validation_s"])
    return total


def format_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _machine(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    cores = machine.get("cpus_available") or machine.get("logical_cpus")
    device = "GPU" if machine.get("gpu") else f"{cores}-core CPU" if cores else "CPU"
    return f"{device}, {machine.get('threads', '?')} threads, measured {str(results.get('measured_at', '?'))[:10]}"


def demo_table(bundles_dir: Path = BUNDLES_DIR, results: dict[str, Any] | None = None) -> str:
    """One line per demo bundle with its expected duration (what ``effseg demo --help`` lists)."""
    results = load_demo_results() if results is None else results
    lines = []
    for name in demo_bundles(bundles_dir):
        seconds = expected_demo_seconds(name, results, bundles_dir) if results else None
        lines.append(f"  {name:22s} {'~' + format_minutes(seconds) if seconds else 'not measured'}")
    where = f" ({_machine(results)}; {MEASURE_COMMAND} re-measures)" if results else ""
    return "\n".join([f"bundles and expected run time{where}:", *lines])


def outputs_help() -> str:
    return "\n".join(["writes, inside the bundle folder (demo_realistic/ instead of demo/ with --dataset realistic):",
                      *(f"  {p.format(run='demo'):40s} {what}" for p, what in DEMO_OUTPUTS)])  # fmt: skip


def demo_banner(
    bundle_root: Path,
    data_cache: Path | str | None = None,
    results: dict[str, Any] | None = None,
    resume_epoch: int | None = None,
    dataset: str = "phantoms",
) -> str:
    """What ``effseg demo`` prints before it starts: the dataset, the expected duration and what it writes where.

    ``resume_epoch``: the epoch of a checkpoint already in ``models/demo`` (``models/demo_<dataset>``; the demo
    resumes from it, so a finished run trains no further epochs and goes straight to the hold-out evaluation)."""
    bundle_root = Path(bundle_root)
    run = demo_run_name(dataset)
    results = load_demo_results() if results is None else results
    # the measured demo times are the phantoms' (about 3x fewer voxels per case than the realistic data)
    seconds = expected_demo_seconds(bundle_root.name, results, bundle_root.parent) if results else None
    if seconds and dataset != "phantoms":
        duration = (
            f"expected duration: measured on the phantoms only (about {format_minutes(seconds)} there); longer on "
            "the realistic cases, whose validation and caching handle about 3x more voxels"
        )
    elif seconds:
        duration = (
            f"expected duration: about {format_minutes(seconds)} ({_machine(results)}, "
            f"estimated from {BENCHMARKS_JSON.relative_to(REPO)}); longer on a busy machine"
        )
    else:
        duration = f"expected duration: not measured for this bundle (run {MEASURE_COMMAND})"
    lines = [
        f"effseg demo {bundle_root.name}: train on synthetic data, then evaluate a hold-out set",
        f"  dataset: {DATASET_NOTES[dataset][0]}",
        f"  {duration}",
    ]
    if data_cache is not None:
        lines.append(f"  synthetic data (generated on first use): {data_cache}")
    lines.extend(f"  {bundle_root / path.format(run=run)}: {what}" for path, what in DEMO_OUTPUTS)
    if resume_epoch is not None:
        max_epochs = _demo_int(bundle_root, "max_epochs")
        ckpt_dir = bundle_root / "models" / run
        done = max_epochs is not None and resume_epoch >= max_epochs
        lines.append(
            f"  note: {ckpt_dir} already holds a checkpoint of epoch {resume_epoch}"
            + (f" of {max_epochs}" if max_epochs else "")
            + (": training is finished, only the hold-out evaluation runs" if done else ": training resumes from it")
            + f" (delete {ckpt_dir} to train from scratch)"
        )
    return "\n".join(lines)
