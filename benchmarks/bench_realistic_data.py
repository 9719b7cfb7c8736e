"""Realistic KiTS dataset (real KiTS19 label maps, CT-like intensities): generation time and per-case statistics.

    python benchmarks/bench_realistic_data.py                      # 12 cases at the default spacing
    python benchmarks/bench_realistic_data.py --num-cases 20 --spacing 4 2.5 2.5 --json out.json

Runs :func:`monai_effseg.data.realistic_kits_dataset` end to end into a temporary cache (the total includes reading
the label maps), then times each case again with the same calls the generator makes (label maps already in memory:
augmentation, resampling, rendering, writing the two NIfTI files) and checks that the arrays match the dataset's.
Prints one table: per case the source label map, array shape and spacing (z, y, x), kidney volume (kidney + tumour),
tumour fraction of the kidney region, tumour contrast to the kidney (mean HU of kidney minus tumour, noise-free;
negative: the tumour is brighter), noise SD and seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_effseg.data import build_datalist
from monai_effseg.data.realistic import (
    MANIFEST,
    default_labels_dir,
    find_label_maps,
    load_label_source,
    make_realistic_case,
    realistic_kits_dataset,
)
from monai_effseg.data.synthetic import write_case

HEADER = ("case", "source", "shape z,y,x", "Mvox", "spacing z,y,x mm", "kidney ml", "tumour %", "contrast HU",
          "noise HU", "seconds")  # fmt: skip


def time_cases(root: Path, params: dict, files: list[Path], scratch: Path) -> list[float]:
    """Seconds per case for one more generation of each case (sources in memory); asserts identical arrays."""
    seconds = []
    for index, item in enumerate(build_datalist(root)):
        start = time.perf_counter()
        rng = np.random.default_rng([params["seed"], 3, index])
        phantom, _ = make_realistic_case(load_label_source(files[index % len(files)]), rng, params)
        image_path, label_path = scratch / f"{index}_image.nii.gz", scratch / f"{index}_label.nii.gz"
        write_case(phantom, image_path, label_path, params["orientations"][index % len(params["orientations"])])
        seconds.append(time.perf_counter() - start)
        for mine, theirs in ((image_path, item["image"]), (label_path, item["label"])):
            assert np.array_equal(np.asarray(nib.load(mine).dataobj), np.asarray(nib.load(theirs).dataobj))
    return seconds


def table(cases: list[dict], seconds: list[float]) -> list[tuple]:
    rows = []
    for case, sec in zip(cases, seconds):
        shape = case["shape_zyx"]
        contrast = case["tumour_contrast_hu"]
        rows.append((
            case["case_id"], case["source"], "x".join(str(s) for s in shape), f"{np.prod(shape) / 1e6:.2f}",
            "x".join(f"{s:.2f}" for s in case["spacing_zyx"]), f"{case['kidney_ml']:.0f}",
            f"{100 * case['tumour_fraction']:.1f}", "-" if contrast is None else f"{contrast:+.0f}",
            f"{case['noise_sd_hu']:.0f}", f"{sec:.2f}",
        ))  # fmt: skip
    return rows


def render(rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"))
    parser.add_argument("--labels-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    labels_dir = args.labels_dir or default_labels_dir()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = realistic_kits_dataset(num_cases=args.num_cases, root=Path(tmp), seed=args.seed, spacing=args.spacing,
                                      labels_dir=labels_dir)  # fmt: skip
        total = time.perf_counter() - start
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        size_mb = sum(f.stat().st_size for f in root.rglob("*.nii.gz")) / 1e6
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        seconds = time_cases(root, manifest, find_label_maps(labels_dir), scratch)
    cases = manifest["cases"]
    print(render(table(cases, seconds)))
    contrasts = [abs(c["tumour_contrast_hu"]) for c in cases if c["tumour_contrast_hu"] is not None]
    voxels = [float(np.prod(c["shape_zyx"])) for c in cases]
    summary = {
        "num_cases": len(cases),
        "end_to_end_s": round(total, 2),
        "per_case_s_median": round(float(np.median(seconds)), 2),
        "per_case_s_max": round(float(np.max(seconds)), 2),
        "voxels_mean_M": round(float(np.mean(voxels)) / 1e6, 2),
        "dataset_MB": round(size_mb, 1),
        "abs_contrast_hu_range": [round(min(contrasts), 1), round(max(contrasts), 1)],
        "tumour_fraction_range": [min(c["tumour_fraction"] for c in cases), max(c["tumour_fraction"] for c in cases)],
        "slice_mm": sorted({c["spacing_zyx"][0] for c in cases}),
    }
    print(f"\nend to end {summary['end_to_end_s']} s for {len(cases)} cases (label maps read once); per case "
          f"median {summary['per_case_s_median']} s, max {summary['per_case_s_max']} s; mean "
          f"{summary['voxels_mean_M']} M voxels; {summary['dataset_MB']} MB on disk; |contrast| "
          f"{summary['abs_contrast_hu_range'][0]}-{summary['abs_contrast_hu_range'][1]} HU; slices {summary['slice_mm']} mm")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "cases": cases, "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
