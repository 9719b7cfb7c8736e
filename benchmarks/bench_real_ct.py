"""Issue 2: a bundle's ``inference.json`` end to end on a real CT (../shared/data/abdomen_ct_3mm/ct.nii.gz, 3 mm,
RAS) with freshly initialised weights of the paper-size network: the label map written must have the input's exact
shape and affine. Prints the throughput in input voxels per second on ``--threads`` CPU threads.

The CT is resampled to the bundle's target spacing (KiTS19: 0.78 x 0.78 x 3 mm, about 20 M voxels for this scan),
so the figure is dominated by the sliding window over the resampled volume. Mirror TTA (8 passes) is off by default
(``--mirror`` turns the bundle's setting back on).

    python benchmarks/bench_real_ct.py [--bundle kits_nnunet_baseline] [--threads 2] [--mirror] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_effseg.workflows import run_bundle

REPO = Path(__file__).resolve().parents[1]
CT = REPO.parent / "shared" / "data" / "abdomen_ct_3mm" / "ct.nii.gz"


def run(bundle: str = "kits_nnunet_baseline", ct: Path = CT, threads: int = 2, mirror: bool = False) -> dict:
    torch.set_num_threads(threads)
    root = REPO / "bundles" / bundle
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "scans").mkdir()
        shutil.copy(ct, tmp / "scans" / ct.name)
        overrides: dict = {} if mirror else {"mirror_axes": []}
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        parser.update({"bundle_root": str(root), **overrides})
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def")
        torch.save(net.state_dict(), tmp / "model.pt")
        params = sum(p.numel() for p in net.parameters())
        start = time.perf_counter()
        run_bundle(root, ["inference.json"], "inference", input_dir=str(tmp / "scans"), output_dir=str(tmp / "segs"),
                   ckpt_path=str(tmp / "model.pt"), fingerprint_path=str(tmp / "none.json"), **overrides)  # fmt: skip
        seconds = time.perf_counter() - start
        outputs = sorted((tmp / "segs").rglob("*.nii*"))
        if len(outputs) != 1:
            raise RuntimeError(f"expected one label map under {tmp / 'segs'}, found {outputs}")
        src, seg = nib.load(str(ct)), nib.load(str(outputs[0]))
        labels = np.unique(np.asanyarray(seg.dataobj)).tolist()
    return {
        "bundle": bundle, "ct": str(ct), "shape": list(src.shape), "spacing": [float(s) for s in src.header.get_zooms()],
        "params": params, "threads": threads, "mirror_tta": mirror, "seconds": seconds,
        "voxels_per_s": float(np.prod(src.shape)) / seconds,
        "shape_equal": seg.shape == src.shape, "affine_equal": bool(np.array_equal(seg.affine, src.affine)),
        "labels": labels,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="kits_nnunet_baseline")
    parser.add_argument("--ct", type=Path, default=CT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mirror", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    r = run(args.bundle, args.ct, args.threads, args.mirror)
    print(f"{r['bundle']} ({r['params']:,} params, fresh weights) on {r['ct']}: {r['shape']} at {r['spacing']} mm")
    print(f"wall {r['seconds']:.1f} s on {r['threads']} threads, mirror TTA {'on' if r['mirror_tta'] else 'off'}: "
          f"{r['voxels_per_s']:,.0f} input voxels/s")  # fmt: skip
    print(f"output geometry: shape equal {r['shape_equal']}, affine equal {r['affine_equal']}, labels {r['labels']}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    if not (r["shape_equal"] and r["affine_equal"]):
        raise SystemExit("FAIL: the label map does not have the input's geometry")


if __name__ == "__main__":
    main()
