"""Peak memory of one forward of every network of Martinho's Table 1 at its paper input (1x1x128^3), each in its own
process, in the mode the bundles run on a CPU (``optimized``: :func:`monai_effseg.deploy.optimize_for_inference`)
and, with ``--modes eager optimized``, eagerly too.

    python benchmarks/bench_forward_memory.py [--nets NAME ...] [--modes optimized] [--json FILE]

Peak = the child process's maximum resident set size (``ru_maxrss``: weights, the interpreter and torch included),
after building the network and running one forward under ``torch.no_grad()`` on 2 threads, deep supervision off,
with glibc's default allocator as in a bundle run (``--keep-freed-memory``: as the speed benchmarks run, where
freed blocks stay in the heap and fragmentation raises the peak).
The bar (issue 28): <= 8 GB for every network. The forward time printed is a first pass in a fresh process (page
faults included): the speed comparison is ``bench_efficientnet_speed.py``'s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BAR_GB = 8.0

CHILD = """
import json, resource, sys, time
import torch
from monai_effseg.deploy.optimize import keep_freed_memory, optimize_for_inference
from monai_effseg.nets import build_net
from monai_effseg.nets.registry import PROFILE_INPUTS

name, mode, keep, slabs = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
if keep:
    keep_freed_memory()
if not slabs:
    import monai_effseg.deploy.mbconv
    monai_effseg.deploy.mbconv.SLAB_ELEMENTS = 2**62  # one slab: the whole expanded tensor at once
torch.set_num_threads(2)
torch.manual_seed(0)
net = build_net(name, deep_supervision=False).eval()
if mode == "optimized":
    net = optimize_for_inference(net, inplace=True)
x = torch.randn(1, *PROFILE_INPUTS[name])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    start = time.perf_counter()
    net(x)
    seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"input": list(x.shape), "before_gb": before / 2**20, "peak_gb": peak / 2**20, "first_pass_s": seconds}))
"""


def measure_one(name: str, mode: str, keep_freed: bool = False, slabs: bool = True) -> dict:
    """One network in one mode, in a fresh interpreter; a child killed by the out-of-memory killer is reported."""
    command = [sys.executable, "-c", CHILD, name, mode, str(int(keep_freed)), str(int(slabs))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        reason = "killed (out of memory?)" if done.returncode < 0 else done.stderr.strip().splitlines()[-1]
        return {"name": name, "mode": mode, "error": reason}
    return {"name": name, "mode": mode, **json.loads(done.stdout.strip().splitlines()[-1])}


def table(rows: Sequence[dict]) -> str:
    lines = ["| network | mode | input | peak RSS (GB) | before forward (GB) | first pass (s) | <= 8 GB |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | {row['mode']} | - | {row['error']} | - | - | no |")
            continue
        shape = "x".join(str(n) for n in row["input"])
        ok = "yes" if row["peak_gb"] <= BAR_GB else "**no**"
        lines.append(f"| {row['name']} | {row['mode']} | {shape} | {row['peak_gb']:.2f} | {row['before_gb']:.2f} | "
                     f"{row['first_pass_s']:.1f} | {ok} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    from monai_effseg.nets.thesis_table1 import THESIS_TABLE1

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=list(THESIS_TABLE1))
    parser.add_argument("--modes", nargs="+", default=["optimized"], choices=["eager", "optimized"])
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory (as the speed benchmarks do; bundles do not): a higher peak",
    )
    parser.add_argument(
        "--no-slabs",
        action="store_true",
        help="optimized FullyEfficient decoders expand the whole volume at once (the A/B of the slabs)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    rows = []
    for name in args.nets:
        for mode in args.modes:
            rows.append(measure_one(name, mode, args.keep_freed_memory, not args.no_slabs))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    worst = max((r for r in rows if "error" not in r), key=lambda r: r["peak_gb"], default=None)
    failed = [r["name"] for r in rows if "error" in r or r["peak_gb"] > BAR_GB]
    if worst:
        print(f"largest peak: {worst['name']} ({worst['mode']}) {worst['peak_gb']:.2f} GB; over {BAR_GB:g} GB: "
              f"{', '.join(failed) or 'none'}")  # fmt: skip
    if args.json:
        settings = {"bar_gb": BAR_GB, "keep_freed_memory": args.keep_freed_memory, "slabs": not args.no_slabs}
        args.json.write_text(json.dumps({**settings, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
