"""Each bundle's CPU demo, exactly as ``effseg demo <bundle>`` runs it (``train.json`` + ``demo.json``: training,
then the hold-out evaluation of ``inference.json`` on 6 unseen synthetic phantoms), timed, with the issue bars:

* KiTS19 family (issue 6, bar 4): kidney Dice >= 0.85 within 10 minutes of 2-core CPU; the cascade must beat the
  single-stage ResidualUNet's tumour Dice on the same budget.
* LiTS family (issue 5, bar 3): liver Dice >= 0.9 and tumour Dice >= 0.5 within 10 minutes.

Prints, per run: wall time, process CPU time (user + sys; on a shared machine wall time stretches with the load, CPU
time much less), the load average before and after, and the hold-out metrics of the bundle's protocol. With
``--repeats N`` the bundles are interleaved (a, b, c, a, b, c, ...) so that load changes hit every bundle alike, and
min / median are reported.

    python benchmarks/bench_demo.py [--bundles kits_residual_unet kits_unet_cascade kits_mss_unet]
                                    [--repeats 1] [--threads 2] [--out results.json]
    python benchmarks/bench_demo.py --bundles lits_mobilenet_unet lits_shufflenet_unet lits_dsts_unet
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from monai_effseg.workflows import run_bundle

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("kits_residual_unet", "kits_unet_cascade", "kits_mss_unet")
TIME_LIMIT_S = 600.0
# Hold-out metrics reported per evaluation protocol, and the Dice bars of the issues (metric -> minimum).
KEYS = {
    "kits19": ("kidney_dice", "tumor_dice", "kidney_sd", "tumor_sd", "composite"),
    "kits21": ("kidney_and_mass_dice", "mass_dice", "tumor_dice", "kidney_and_mass_sd", "composite"),
    "lits": ("liver_dice", "tumor_dice", "lesion_recall_iou50", "lesion_precision_iou50", "liver_assd"),
}
BARS = {"kits19": {"kidney_dice": 0.85}, "kits21": {"kidney_and_mass_dice": 0.85},
        "lits": {"liver_dice": 0.9, "tumor_dice": 0.5}}  # fmt: skip


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_demo(bundle: str, work: Path) -> dict:
    """One demo run in a scratch folder; returns timings and the hold-out summary."""
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    run_bundle(REPO / "bundles" / bundle, ["train.json", "demo.json"], "train",
               ckpt_dir=str(work / "models"), output_dir=str(work / "eval"))  # fmt: skip
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    summary = json.loads((work / "eval" / "holdout" / "metrics_summary.json").read_text())
    protocol = summary["protocol"]
    holdout = {k: round(summary["metrics"][k]["mean"], 4) for k in KEYS[protocol] if k in summary["metrics"]}
    return {"bundle": bundle, "protocol": protocol, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "holdout": holdout,
            "overlays": summary.get("files", {}).get("overlays", [])}  # fmt: skip


def verdict(protocol: str, wall_s: float, scores: dict) -> str:
    misses = [f"{k} {scores[k]:.4f} < {bar}" for k, bar in BARS[protocol].items() if not scores[k] >= bar]
    if wall_s > TIME_LIMIT_S:
        misses.append(f"{wall_s:.0f} s > {TIME_LIMIT_S:.0f} s")
    return "met" if not misses else "missed: " + "; ".join(misses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=list(BUNDLES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write all runs as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for repeat in range(args.repeats):
        for bundle in args.bundles:
            with tempfile.TemporaryDirectory(prefix=f"demo_{bundle}_") as work:
                result = run_demo(bundle, Path(work))
            result["repeat"] = repeat
            runs.append(result)
            print(json.dumps(result), flush=True)
    for protocol in KEYS:
        mine = [r for r in runs if r["protocol"] == protocol]
        if not mine:
            continue
        keys = KEYS[protocol]
        print(f"\n| bundle | runs | wall min / median (s) | CPU min / median (s) | load | "
              + " | ".join(keys) + " | bar |")  # fmt: skip
        print("|" + "---|" * (len(keys) + 6))
        for bundle in dict.fromkeys(r["bundle"] for r in mine):
            rows = [r for r in mine if r["bundle"] == bundle]
            walls, cpus = [r["wall_s"] for r in rows], [r["cpu_s"] for r in rows]
            scores = {k: statistics.median(r["holdout"].get(k, float("nan")) for r in rows) for k in keys}
            loads = f"{min(r['load_before'] for r in rows):.1f}-{max(r['load_after'] for r in rows):.1f}"
            print(f"| {bundle} | {len(rows)} | {min(walls)} / {statistics.median(walls)} | {min(cpus)} / "
                  f"{statistics.median(cpus)} | {loads} | " + " | ".join(f"{scores[k]:.4f}" for k in keys)
                  + f" | {verdict(protocol, statistics.median(walls), scores)} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
