"""Training speed on the CPU with and without bf16 autocast, per bundle: which bundles should train in bf16 by default
on a CPU with native bf16 instructions (``monai_effseg.training.default_amp``).

Each bundle's own demo trainer (``train.json`` + ``demo.json``: the demo network, patch and batch, its data loading
and augmentation on the phantoms) runs ``--iterations`` iterations with ``amp`` off and on, the two arms interleaved
over ``--rounds`` rounds so that load changes hit both alike; the first ``--warmup`` iterations of each run are not
timed. Prints each arm's best (over rounds) median seconds per iteration and their ratio (float32 / bf16: above 1,
bf16 is faster), and with ``--json`` writes one row per bundle.

    python benchmarks/bench_cpu_amp.py [--bundles kits_nnunet_baseline ...] [--iterations 14] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_format as rf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def seconds_per_iteration(bundle: str, amp: bool, iterations: int, warmup: int, work: Path) -> tuple[float, str]:
    """Median seconds per training iteration of ``bundle``'s demo trainer, and the dtype its forward ran in."""
    from ignite.engine import Events

    from monai_effseg.workflows import bundle_workflow

    literals = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"), "amp": amp,
                "max_epochs": 1, "iterations_per_epoch": iterations, "num_workers": 0}  # fmt: skip
    workflow = bundle_workflow(REPO / "bundles" / bundle, ["train.json", "demo.json"], "train", literals=literals)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stamps.append(time.perf_counter()))
    trainer.run()
    workflow.finalize()
    steps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :])]
    dtype = trainer.autocast_dtype
    return statistics.median(steps), str(dtype).removeprefix("torch.") if dtype else "float32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=sorted(p.name for p in (REPO / "bundles").iterdir()))
    parser.add_argument("--iterations", type=int, default=14)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from monai_effseg.deploy import native_bf16

    print(f"CPU: {rf.cpu_model()}; native bf16: {native_bf16() or 'none'}; {args.threads} threads")
    print(f"{'bundle':24s} {'float32 s/it':>12s} {'bf16 s/it':>10s} {'speed-up':>8s}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpu_amp_") as tmp:
        for bundle in args.bundles:
            times: dict[bool, list[float]] = {False: [], True: []}
            for r in range(args.rounds):
                for amp in (False, True):
                    s, dtype = seconds_per_iteration(bundle, amp, args.iterations, args.warmup,
                                                     Path(tmp) / f"{bundle}_{amp}_{r}")  # fmt: skip
                    if amp and dtype != "bfloat16":
                        raise SystemExit(f"{bundle}: amp on trained in {dtype}, not bfloat16")
                    times[amp].append(s)
            fp32, bf16 = min(times[False]), min(times[True])
            rows.append({"bundle": bundle, "float32_s_per_it": round(fp32, 4), "bf16_s_per_it": round(bf16, 4),
                         "speedup": round(fp32 / bf16, 3)})  # fmt: skip
            print(f"{bundle:24s} {fp32:12.3f} {bf16:10.3f} {fp32 / bf16:8.2f}", flush=True)
    if args.json:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        results = {"command": "python benchmarks/bench_cpu_amp.py --json docs/cpu_amp.json", "measured_at": stamp,
                   "cpu": rf.cpu_model(), "native_bf16": native_bf16(), "threads": args.threads, "rows": rows}  # fmt: skip
        rf.write_atomic(args.json, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
