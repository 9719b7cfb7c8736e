"""Time the KiTS metrics on the 10 shipped real KiTS19 labels at full resolution.

Bar (issue 3): all KiTS metrics (every region's Dice and surface Dice) for one case and one perturbation in < 5 s
on 2 CPU threads, median over the shipped labels. Wall time depends on other load on the machine, so the process
CPU time (all threads) is printed too.

    python benchmarks/bench_metrics.py [--protocol kits21] [--threads 2] [--lits] [--cases case_00000 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from monai_effseg.boxes import union_bbox
from monai_effseg.metrics import kits_case_metrics, lits_case_metrics

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "kits19_labels"


def _fg_box(gt: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(max(lo, 0), hi) for lo, hi in union_bbox(gt, margin=2))


def perturbations(gt: np.ndarray, spacing: tuple[float, ...]) -> dict[str, np.ndarray]:
    """The reference perturbations of tests/data/reference/methods.md section 3e; the blob goes to the (z-mid, 20,
    20) corner, the worst case for the union bounding box."""
    box = _fg_box(gt)
    erode = gt.copy(order="K")
    tumor = gt[box] == 2
    erode[box][tumor & ~ndimage.binary_erosion(tumor)] = 1
    shift = np.zeros_like(gt)
    shift[1:, 2:] = gt[:-1, :-2]
    deleted = gt.copy(order="K")
    sub = deleted[box]
    sub[sub == 2] = 1
    blob = gt.copy(order="K")
    sp = np.asarray(spacing)
    half = np.ceil(10.0 / sp).astype(int)
    grid = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, sp)], indexing="ij")
    zc = (box[0].start + box[0].stop) // 2
    centre = (zc, max(20, half[1]), max(20, half[2]))
    blob[tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half))][sum(g * g for g in grid) <= 100.0] = 2
    return {"tumor_erode1": erode, "shift_z1_y2": shift, "fp_blob": blob, "tumor_deleted": deleted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--protocol", default="kits21", choices=("kits19", "kits21"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lits", action="store_true", help="also time the LiTS suite")
    parser.add_argument("--cases", nargs="*", help="case names (default: every label in --data)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paths = sorted(args.data.glob("case_*.nii.gz"))
    if args.cases:
        paths = [p for p in paths if p.name.split(".")[0] in args.cases]
    kits_wall, kits_cpu, lits_wall, lits_cpu = [], [], [], []
    print(f"protocol {args.protocol}, {args.threads} threads; seconds per case and perturbation (wall / CPU)")
    for path in paths:
        img = nib.load(str(path))
        gt = np.asanyarray(img.dataobj)
        spacing = tuple(float(z) for z in img.header.get_zooms())
        for name, pred in perturbations(gt, spacing).items():
            wall, cpu = time.perf_counter(), time.process_time()
            kits_case_metrics(pred, gt, spacing, args.protocol)
            kits_wall.append(time.perf_counter() - wall)
            kits_cpu.append(time.process_time() - cpu)
            line = f"{path.name[:10]} {str(gt.shape):18s} {name:14s} kits {kits_wall[-1]:5.2f} / {kits_cpu[-1]:5.2f}"
            if args.lits:
                wall, cpu = time.perf_counter(), time.process_time()
                lits_case_metrics(pred, gt, spacing)
                lits_wall.append(time.perf_counter() - wall)
                lits_cpu.append(time.process_time() - cpu)
                line += f"   lits {lits_wall[-1]:5.2f} / {lits_cpu[-1]:5.2f}"
            print(line, flush=True)
    print(
        f"\nKiTS ({args.protocol}) all metrics, median over {len(kits_wall)} case x perturbation runs: "
        f"wall {statistics.median(kits_wall):.2f} s, CPU {statistics.median(kits_cpu):.2f} s "
        f"(max wall {max(kits_wall):.2f} s); bar: < 5 s wall"
    )
    if args.lits:
        print(f"LiTS suite: median wall {statistics.median(lits_wall):.2f} s, CPU {statistics.median(lits_cpu):.2f} s")


if __name__ == "__main__":
    main()
