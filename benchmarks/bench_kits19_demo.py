"""Bar 4 of issue 6: each KiTS19-family bundle's CPU demo (``train.json`` + ``demo.json``, exactly as
``effseg demo <bundle>`` runs it: training, then the hold-out evaluation of ``inference.json`` on 6 unseen synthetic
phantoms) must reach kidney Dice >= 0.85 on the hold-out within 10 minutes of 2-core CPU, and the cascade must beat
the single-stage ResidualUNet's tumour Dice on the same budget.

Prints, per run: wall time, process CPU time (user + sys; on a shared machine wall time stretches with the load, CPU
time much less), the load average before and after, the validation history and the hold-out KiTS19 metrics. With
``--repeats N`` the bundles are interleaved (a, b, c, a, b, c, ...) so that load changes hit every bundle alike,
and min / median are reported.

    python benchmarks/bench_kits19_demo.py [--bundles kits_residual_unet kits_unet_cascade kits_mss_unet]
                                           [--repeats 1] [--threads 2] [--out results.json]
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
KEYS = ("kidney_dice", "tumor_dice", "kidney_sd", "tumor_sd", "composite")


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
    holdout = {k: round(summary["metrics"][k]["mean"], 4) for k in KEYS if k in summary["metrics"]}
    return {"bundle": bundle, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "holdout": holdout,
            "overlays": summary.get("files", {}).get("overlays", [])}  # fmt: skip


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
    print(f"\n| bundle | runs | wall min / median (s) | CPU min / median (s) | load | hold-out kidney Dice | tumour Dice "
          "| kidney SD | tumour SD | composite |")
    print("|" + "---|" * 10)
    for bundle in args.bundles:
        mine = [r for r in runs if r["bundle"] == bundle]
        walls, cpus = [r["wall_s"] for r in mine], [r["cpu_s"] for r in mine]
        scores = {k: statistics.median(r["holdout"].get(k, float("nan")) for r in mine) for k in KEYS}
        loads = f"{min(r['load_before'] for r in mine):.1f}-{max(r['load_after'] for r in mine):.1f}"
        print(f"| {bundle} | {len(mine)} | {min(walls)} / {statistics.median(walls)} | {min(cpus)} / "
              f"{statistics.median(cpus)} | {loads} | " + " | ".join(f"{scores[k]:.4f}" for k in KEYS) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
