"""Time-to-Dice of a bundle's CPU demo: training time until the validation kidney Dice (KiTS21 "kidney and masses")
first reaches a threshold, for kits_efficientunet next to kits_nnunet_baseline, measured the same way.

Each bundle runs ``train.json`` + ``demo.json`` (the demo overlay as shipped: synthetic data, its patch, widths and
iteration budget) with validation after every epoch instead of every ``val_interval`` epochs. The clock counts
training only (validation time is subtracted); the hold-out evaluation of the demo (6 unseen phantoms, inference.json)
runs once at the end. Run it when the CPU is otherwise idle: other processes stretch every figure.

    python benchmarks/bench_time_to_dice.py [--bundles kits_efficientunet kits_nnunet_baseline] [--threshold 0.85]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from training_clock import TrainingClock

from monai_effseg.workflows import bundle_workflow, evaluate_holdout

REPO = Path(__file__).resolve().parents[1]
KIDNEY = "val_kits_dice_kidney_and_mass_dice"


def time_to_dice(bundle: str, threshold: float, work: Path, threads: int, max_epochs: int | None) -> dict:
    torch.set_num_threads(threads)
    root = REPO / "bundles" / bundle
    overrides = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"), "val_interval": 1}
    if max_epochs:
        overrides["max_epochs"] = max_epochs
    workflow = bundle_workflow(root, ["train.json", "demo.json"], "train", **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    history: list[dict] = []
    clock = TrainingClock(trainer, evaluator)

    @clock.on_validation
    def _record(engine, train_s: float) -> None:
        history.append(
            {
                "epoch": trainer.state.epoch,
                "train_s": round(train_s, 1),
                "kidney_dice": round(float(engine.state.metrics.get(KIDNEY, float("nan"))), 4),
                "mean_dice": round(float(engine.state.metrics.get("val_kits_dice", float("nan"))), 4),
            }
        )
        print(
            f"[{bundle}] epoch {history[-1]['epoch']}: train {history[-1]['train_s']} s, "
            f"kidney Dice {history[-1]['kidney_dice']}",
            flush=True,
        )

    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    reached = next((h for h in history if h["kidney_dice"] >= threshold), None)
    holdout = evaluate_holdout(
        root, workflow.parser.get_parsed_content("holdout_dir"), work / "holdout",
        overrides={**workflow.parser.get_parsed_content("demo_inference_overrides"),
                   "ckpt_path": str(work / "models" / "model.pt"),
                   "fingerprint_path": str(work / "models" / "fingerprint.json")},
    )  # fmt: skip
    workflow.finalize()
    return {
        "bundle": bundle,
        "network": type(workflow.parser.get_parsed_content("network_def")).__name__,
        "params": sum(p.numel() for p in workflow.parser.get_parsed_content("network_def").parameters()),
        "time_to_dice_s": reached["train_s"] if reached else None,
        "epoch_reached": reached["epoch"] if reached else None,
        "training_s": history[-1]["train_s"] if history else None,
        "wall_with_validation_s": round(wall, 1),
        "final_val_kidney_dice": history[-1]["kidney_dice"] if history else None,
        "holdout": {
            k: round(v["mean"], 4)
            for k, v in holdout.get("metrics", {}).items()
            if "dice" in k and v.get("mean") is not None
        },
        "history": history,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=["kits_efficientunet", "kits_nnunet_baseline"])
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the demo's epoch budget")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = []
    print(f"load average before: {os.getloadavg()}")
    for bundle in args.bundles:
        with tempfile.TemporaryDirectory(prefix=f"ttd_{bundle}_") as work:
            results.append(time_to_dice(bundle, args.threshold, Path(work), args.threads, args.max_epochs))
    print(f"load average after: {os.getloadavg()}")
    print(
        f"\n| bundle | network | params | time to kidney Dice >= {args.threshold} (s, training only) | epoch "
        "| training (s) | wall incl. validation (s) | final val kidney Dice | hold-out |"
    )
    print("|" + "---|" * 9)
    for r in results:
        print(
            f"| {r['bundle']} | {r['network']} | {r['params']:,} | {r['time_to_dice_s']} | {r['epoch_reached']} "
            f"| {r['training_s']} | {r['wall_with_validation_s']} | {r['final_val_kidney_dice']} | {r['holdout']} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
